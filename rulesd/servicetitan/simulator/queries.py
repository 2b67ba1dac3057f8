"""The list and export endpoints of the simulator: filters, paging and continuation tokens."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from rulesd.servicetitan.catalog import Entity
from rulesd.servicetitan.records import parse_datetime
from rulesd.servicetitan.simulator.build import JSON_ENCODER, LIST_EXCLUDED
from rulesd.servicetitan.simulator.state import MICROS

if TYPE_CHECKING:
    from rulesd.servicetitan.simulator.tenant import Simulator

MAX_IDS = 50
_CACHE_SIZE = 16  # filtered index lists kept per simulator, so paging is not O(n) per page
_PAGING_PARAMS = frozenset({"page", "pageSize", "includeTotal"})


class ApiProblem(Exception):
    """A request the API rejects with a 4xx status and ServiceTitan's error body."""

    def __init__(self, status: int, title: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or {}


# Entity-specific list filters: query parameter -> (entity it names, how a record reaches it).
# A filter value is one id, or comma-separated ids for the plural names.
LINK_FILTERS: dict[str, dict[str, str]] = {
    "location": {"customerId": "customer"},
    "customer_contact": {"customerIds": "customer"},
    "location_contact": {"locationIds": "location"},
    "membership": {"customerIds": "customer"},
    "job": {"customerId": "customer", "locationId": "location"},
    "appointment": {"jobId": "job", "customerId": "customer"},
    "appointment_assignment": {"jobId": "job", "appointmentIds": "appointment"},
    "estimate": {"jobId": "job", "locationId": "location"},
    "invoice": {"jobId": "job", "customerId": "customer"},
    "payment": {"customerId": "customer", "appliedToInvoiceIds": "invoice"},
}
STATUS_FILTERS: dict[str, str] = {
    "job": "jobStatus",
    "appointment": "status",
    "estimate": "status",
    "membership": "status",
}
# List endpoints with no `active` parameter return every row.
NO_ACTIVE_FILTER = frozenset({"customer_contact", "location_contact", "job"})


class Queries:
    """Build list and export responses from a ``Simulator``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._cache: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()

    # -- list endpoints

    def list_page(self, entity: Entity, params: Mapping[str, str]) -> dict[str, Any]:
        """Return one list page as a JSON object (``list_page_json`` parsed)."""
        return json.loads(self.list_page_json(entity, params).body)

    def list_page_json(self, entity: Entity, params: Mapping[str, str]) -> PageJson:
        """Build one list page as the exact bytes the server sends."""
        page = _int_param(params, "page", 1, minimum=1)
        behaviours = self.sim.behaviours
        page_size = _int_param(params, "pageSize", 50, minimum=1)
        if page_size > behaviours.max_page_size:
            raise ApiProblem(
                400,
                "One or more validation errors occurred.",
                {"pageSize": [f"The field pageSize must be between 1 and {behaviours.max_page_size}."]},
            )
        include_total = params.get("includeTotal", "false").lower() == "true"
        with self.sim.lock:
            matches = self._matching(entity, params)
            start = (page - 1) * page_size
            chosen = matches[start : start + page_size]
            records = [self.sim.record_json(entity.name, index) for index in chosen]
        if entity.name in LIST_EXCLUDED:
            records = [_without_active(record) for record in records]
        envelope = {
            "page": page,
            "pageSize": page_size,
            "hasMore": start + page_size < len(matches),
            "totalCount": len(matches) if include_total else None,
        }
        return PageJson.join(envelope, records)

    def _matching(self, entity: Entity, params: Mapping[str, str]) -> list[int]:
        table = self.sim.table(entity.name)
        # Paging params do not change the match list; a change to the table does.
        filters = tuple(sorted((k, v) for k, v in params.items() if k not in _PAGING_PARAMS))
        key = (entity.name, table.count, table.version, filters)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        matches = self._filter(entity, params)
        self._cache[key] = matches
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return matches

    def _filter(self, entity: Entity, params: Mapping[str, str]) -> list[int]:
        sim = self.sim
        table = sim.table(entity.name)
        checks: list[Callable[[int], bool]] = []

        ids = _id_list(params, "ids")
        if ids is not None:
            wanted = {table.index_of(i) for i in ids} - {None}
            candidates: list[int] = sorted(i for i in wanted if i is not None)
        else:
            candidates = list(range(table.count))

        if entity.list_requires_filter and not _has_any(
            params, ("modifiedOnOrAfter", "modifiedBefore", "createdOnOrAfter", "createdBefore",
                     *LINK_FILTERS.get(entity.name, {}))
        ):
            raise ApiProblem(
                400,
                "One of the filters must be specified: ids, modifiedOnOrAfter, "
                "modifiedBefore, createdOnOrAfter or createdBefore.",
            )

        checks.extend(self._active_checks(entity, params))
        for name, array_name, after in (
            ("modifiedOnOrAfter", "modified", True),
            ("modifiedBefore", "modified", False),
            ("createdOnOrAfter", "created", True),
            ("createdBefore", "created", False),
        ):
            if name in params:
                bound = _date_param(params, name)
                values = getattr(table, array_name)
                if after:
                    checks.append(lambda i, v=values, b=bound: v[i] >= b)
                else:
                    checks.append(lambda i, v=values, b=bound: v[i] < b)

        for name, target in LINK_FILTERS.get(entity.name, {}).items():
            wanted_ids = _id_list(params, name)
            if wanted_ids is None:
                continue
            target_table = sim.table(target)
            targets = {target_table.index_of(i) for i in wanted_ids} - {None}
            checks.append(
                lambda i, t=targets, g=target: sim.ancestor(entity.name, i, g) in t
            )

        status_param = STATUS_FILTERS.get(entity.name)
        if status_param and params.get(status_param):
            wanted_status = {s.strip().lower() for s in params[status_param].split(",")}
            checks.append(lambda i: sim.status_name(entity.name, i).lower() in wanted_status)

        matches = [i for i in candidates if all(check(i) for check in checks)]
        return _sorted(table, matches, params.get("sort"))

    def _active_checks(self, entity: Entity, params: Mapping[str, str]) -> list[Callable[[int], bool]]:
        table = self.sim.table(entity.name)
        if entity.active_param == "activeState":
            default = "ActiveOnly"
            if entity.name == "invoice":
                default = self.sim.behaviours.invoice_active_state
            state = params.get("activeState", default)
            if state == "All":
                return []
            if state not in ("ActiveOnly", "InactiveOnly"):
                raise ApiProblem(400, f"The value '{state}' is not valid for activeState.")
            wanted = 1 if state == "ActiveOnly" else 0
            return [lambda i: table.active[i] == wanted]
        if entity.name in NO_ACTIVE_FILTER:
            return []
        active = params.get("active", "True")
        if active.lower() == "any":
            return []
        if active.lower() not in ("true", "false"):
            raise ApiProblem(400, f"The value '{active}' is not valid for active.")
        wanted = 1 if active.lower() == "true" else 0
        return [lambda i: table.active[i] == wanted]

    # -- export endpoints

    def export_page(self, entity: Entity, params: Mapping[str, str]) -> dict[str, Any]:
        """Return one export page as a JSON object (``export_page_json`` parsed)."""
        return json.loads(self.export_page_json(entity, params).body)

    def export_page_json(self, entity: Entity, params: Mapping[str, str]) -> PageJson:
        """Build one export page as the exact bytes the server sends."""
        sim = self.sim
        behaviours = sim.behaviours
        recent = params.get("includeRecentChanges", "false").lower() == "true"
        with sim.lock:
            table = sim.table(entity.name)
            cursor = _decode_from(params.get("from"))
            position = table.log_position_after(*cursor)
            if recent and behaviours.recent_changes_repeat and position > 0:
                position = max(0, position - behaviours.recent_changes_repeat)
            horizon = None
            if not recent and behaviours.export_delay > 0:
                horizon = int((time.time() - behaviours.export_delay) * MICROS)
            active_filter = _export_active_filter(entity, params)

            records: list[bytes] = []
            last = cursor
            log_length = len(table.order_index)
            page_size = behaviours.export_page_size
            order_index = table.order_index
            order_modified = table.order_modified
            modified_now = table.modified
            active = table.active
            while position < log_length and len(records) < page_size:
                modified = order_modified[position]
                if horizon is not None and modified > horizon:
                    break
                index = order_index[position]
                if modified_now[index] == modified:
                    last = (modified, table.record_id(index))
                    if active_filter is None or active[index] == active_filter:
                        records.append(sim.record_json(entity.name, index))
                position += 1
            while position < log_length and not table.is_current(position):
                position += 1
            has_more = position < log_length and (
                horizon is None or order_modified[position] <= horizon
            )
        envelope = {"hasMore": has_more, "continueFrom": encode_token(*last)}
        return PageJson.join(envelope, records)


@dataclass(frozen=True)
class PageJson:
    """A response body ready to send, and how many records it carries."""

    body: bytes
    records: int

    @classmethod
    def join(cls, envelope: dict[str, Any], records: list[bytes]) -> PageJson:
        """Join an envelope and serialized records into the body ``json.dumps`` would write.

        ``data`` comes last, after the envelope's fields, as in ServiceTitan's responses.
        """
        head = JSON_ENCODER.encode(envelope)[:-1].encode()
        separator = b',"data":[' if envelope else b'{"data":['
        return cls(head + separator + b",".join(records) + b"]}", len(records))


def _without_active(record: bytes) -> bytes:
    """Drop ``active`` from a record's JSON: the list form of the entities in ``LIST_EXCLUDED``.

    ``active`` directly follows the integer ``id`` in every built record, so
    its first occurrence is the top-level key.
    """
    start = record.find(b',"active":')
    if start < 0:
        return record
    value = start + len(b',"active":')
    end = value + (4 if record.startswith(b"true", value) else 5)
    return record[:start] + record[end:]


def _export_active_filter(entity: Entity, params: Mapping[str, str]) -> int | None:
    """Return the `active` value an export keeps, or None for all rows.

    Only the appointment-assignment feed defaults to active rows; the
    appointment feed returns all rows unless asked otherwise.
    """
    if entity.name not in ("appointment", "appointment_assignment"):
        return None
    default = "True" if entity.name == "appointment_assignment" else "Any"
    value = params.get("active", default).lower()
    if value == "any":
        return None
    return 1 if value == "true" else 0


def encode_token(modified: int, record_id: int) -> str:
    """Encode an export position: the (modifiedOn, id) of the last record served."""
    raw = f"v1:{modified}:{record_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_from(value: str | None) -> tuple[int, int]:
    """Decode an export ``from``: empty, a token from ``encode_token`` or a date."""
    if not value:
        return (-(2**62), 0)
    try:
        padded = value + "=" * (-len(value) % 4)
        raw = base64.urlsafe_b64decode(padded.encode()).decode()
        version, modified, record_id = raw.split(":")
        if version == "v1":
            return (int(modified), int(record_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    try:
        moment = parse_datetime(value)
    except ValueError:
        raise ApiProblem(400, f"The value '{value}' is not a valid continuation token or date.") from None
    assert moment is not None
    micros = int(moment.timestamp()) * MICROS + moment.microsecond
    # `from=<date>` is inclusive: start just before the first record at that time.
    return (micros - 1, 2**62)


def _sorted(table: Any, matches: list[int], sort: str | None) -> list[int]:
    if not sort:
        return matches
    descending = sort.startswith("-")
    field = sort.lstrip("+- ").lower()
    if field == "id":
        return sorted(matches, reverse=descending)
    if field == "modifiedon":
        return sorted(matches, key=table.modified.__getitem__, reverse=descending)
    if field == "createdon":
        return sorted(matches, key=table.created.__getitem__, reverse=descending)
    raise ApiProblem(400, f"Sorting by '{sort}' is not supported.")


def _has_any(params: Mapping[str, str], names: tuple[str, ...]) -> bool:
    return any(params.get(name) for name in names)


def _int_param(params: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiProblem(400, f"The value '{value}' is not valid for {name}.") from None
    if number < minimum:
        raise ApiProblem(400, f"The value '{value}' is not valid for {name}.")
    return number


def _date_param(params: Mapping[str, str], name: str) -> int:
    try:
        moment = parse_datetime(params[name])
    except ValueError:
        raise ApiProblem(400, f"The value '{params[name]}' is not valid for {name}.") from None
    assert moment is not None
    return int(moment.timestamp()) * MICROS + moment.microsecond


def _id_list(params: Mapping[str, str], name: str) -> list[int] | None:
    value = params.get(name)
    if not value:
        return None
    try:
        ids = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ApiProblem(400, f"The value '{value}' is not valid for {name}.") from None
    if len(ids) > MAX_IDS:
        raise ApiProblem(400, f"{name} accepts at most {MAX_IDS} ids.")
    return ids
