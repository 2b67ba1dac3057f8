"""The simulated tenant: deterministic generation, queries for the endpoints, and changes."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from rulesd.servicetitan.catalog import ENTITIES, ENTITY_LIST
from rulesd.servicetitan.simulator.build import build_record, record_bytes
from rulesd.servicetitan.simulator.cache import DEFAULT_CACHE_BYTES, RecordCache
from rulesd.servicetitan.simulator.fastrandom import FastRandom
from rulesd.servicetitan.simulator.state import MICROS, Table

logger = logging.getLogger(__name__)

DAY = 86_400 * MICROS
HISTORY = 3 * 365 * DAY  # generated records spread over the three years before the anchor
RECENT = 14 * DAY  # jobs created this recently are still open

SCALES: dict[str, int] = {"small": 200, "medium": 50_000, "large": 200_000}

JOB_STATUSES = ENTITIES["job"].status_values
APPOINTMENT_STATUSES = ENTITIES["appointment"].status_values
ASSIGNMENT_STATUSES = ENTITIES["appointment_assignment"].status_values
ESTIMATE_STATUSES = ENTITIES["estimate"].status_values
MEMBERSHIP_STATUSES = ENTITIES["membership"].status_values
TECHNICIAN_STATUSES = ("Idle", "Dispatched", "Working", "Meal")

# Job status -> the status of its appointments and their assignments.
APPOINTMENT_FOR_JOB = {
    "Scheduled": "Scheduled",
    "Dispatched": "Dispatched",
    "InProgress": "Working",
    "Hold": "Hold",
    "Completed": "Done",
    "Canceled": "Canceled",
}
ASSIGNMENT_FOR_APPOINTMENT = {
    "Scheduled": "Scheduled",
    "Dispatched": "Dispatched",
    "Working": "Working",
    "Hold": "Working",
    "Done": "Done",
    "Canceled": "Scheduled",
}

# Parent of each entity in the generated tree; reference data has none.
PARENTS: dict[str, str | None] = {
    "business_unit": None,
    "technician": None,
    "employee": None,
    "job_type": None,
    "campaign": None,
    "tag_type": None,
    "customer": None,
    "customer_contact": "customer",
    "location": "customer",
    "location_contact": "location",
    "membership": "customer",
    "job": "location",
    "appointment": "job",
    "appointment_assignment": "appointment",
    "estimate": "job",
    "invoice": "job",
    "payment": "invoice",
}

# Id ranges: entity ids never collide, which makes a wrong join visible.
ID_BASES: dict[str, int] = {
    "business_unit": 1_000,
    "technician": 2_000,
    "employee": 3_000,
    "job_type": 4_000,
    "campaign": 5_000,
    "tag_type": 6_000,
    "customer": 10_000_000,
    "customer_contact": 20_000_000,
    "location": 30_000_000,
    "location_contact": 40_000_000,
    "membership": 50_000_000,
    "job": 60_000_000,
    "appointment": 70_000_000,
    "appointment_assignment": 80_000_000,
    "estimate": 90_000_000,
    "invoice": 100_000_000,
    "payment": 110_000_000,
}


@dataclass(frozen=True)
class Behaviours:
    """API behaviours that ServiceTitan does not document; each is configurable.

    ``export_page_size``: records per export response (undocumented).
    ``export_delay``: seconds before a change shows in an export feed called
    without ``includeRecentChanges`` (ServiceTitan documents about 15 min;
    0 here so tests see changes at once). ``recent_changes_repeat``: how
    many already-served records an export with ``includeRecentChanges``
    sends again, as ServiceTitan warns it may. ``max_page_size``: the
    largest ``pageSize`` a list endpoint accepts. ``invoice_active_state``:
    the default ``activeState`` of the invoice list. ``bearer_required``:
    whether a token without the ``Bearer`` prefix is rejected.
    """

    export_page_size: int = 500
    export_delay: float = 0.0
    recent_changes_repeat: int = 0
    max_page_size: int = 5000
    invoice_active_state: str = "ActiveOnly"
    bearer_required: bool = False


class Simulator:
    """A ServiceTitan tenant generated from a seed; every method is thread-safe.

    Records are numbered per entity from 0 in creation order and their ids
    are ``ID_BASES[entity] + index + 1``. ``anchor`` is "now" for the
    generated history; changes made later use the wall clock.
    ``cache_bytes`` bounds the JSON of served records kept for the next
    request (see ``RecordCache``).
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        customers: int = 200,
        tenant_id: int = 1000,
        activity: float = 0.0,
        anchor: datetime | None = None,
        behaviours: Behaviours | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if customers < 1:
            raise ValueError(f"invalid customer count {customers}: must be at least 1")
        self.seed = seed
        self.customer_count = customers
        self.tenant_id = tenant_id
        self.activity = activity
        self.behaviours = behaviours or Behaviours()
        if anchor is None:
            anchor = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        self.anchor = int(anchor.timestamp()) * MICROS
        self.lock = threading.RLock()
        self.cache = RecordCache(cache_bytes)
        self.tables: dict[str, Table] = {}
        for code, entity in enumerate(ENTITY_LIST):
            self.tables[entity.name] = Table(entity.name, code + 1, ID_BASES[entity.name])
        self._clock = 0
        self.changes_applied = 0

        started = time.monotonic()
        from rulesd.servicetitan.simulator.generate import generate_tenant

        generate_tenant(self)
        for table in self.tables.values():
            table.build_order()
            if table.count:
                self._clock = max(self._clock, max(table.modified))
        logger.info(
            "generated a tenant of %d records from seed %d in %.1f s",
            sum(self.counts().values()),
            seed,
            time.monotonic() - started,
            extra={"event": "simulator_tenant_generated", "tenant_id": tenant_id},
        )

    # -- helpers shared by the generator, the record builder and the changes

    def rng(self, entity: str, index: int, salt: int = 0) -> FastRandom:
        """Return the random generator of one record: the same for the same seed and index."""
        code = self.tables[entity].code
        return FastRandom((self.seed << 48) ^ (code << 40) ^ (salt << 36) ^ index)

    def now(self) -> int:
        """Return a strictly increasing timestamp for a change, in epoch microseconds."""
        now = int(time.time() * MICROS)
        self._clock = max(now, self._clock + 1)
        return self._clock

    def counts(self) -> dict[str, int]:
        """Return the record count of every entity: what a full sync must load."""
        with self.lock:
            return {name: table.count for name, table in self.tables.items()}

    def table(self, entity: str) -> Table:
        try:
            return self.tables[entity]
        except KeyError:
            raise KeyError(f"unknown entity {entity!r}") from None

    def index_of(self, entity: str, record_id: int) -> int:
        """Return the index of a record id; raise ``LookupError`` when no such record exists."""
        index = self.table(entity).index_of(int(record_id))
        if index is None:
            raise LookupError(f"{entity} {record_id} not found")
        return index

    def ancestor(self, entity: str, index: int, target: str) -> int:
        """Return the index of the ``target`` record above ``entity`` ``index`` in the tree."""
        while entity != target:
            parent = PARENTS[entity]
            if parent is None:
                raise ValueError(f"{target} is not above {entity}")
            index = self.tables[entity].parent[index]
            entity = parent
        return index

    def status_name(self, entity: str, index: int) -> str:
        return STATUS_NAMES[entity][self.tables[entity].status[index]]

    def set_status(self, entity: str, index: int, name: str) -> None:
        self.tables[entity].status[index] = STATUS_NAMES[entity].index(name)

    def record(self, entity: str, index: int) -> dict[str, Any]:
        """Build the export form of one record."""
        with self.lock:
            return build_record(self, entity, index)

    def record_json(self, entity: str, index: int) -> bytes:
        """Return the export form of one record as compact JSON, from the cache when current."""
        with self.lock:
            table = self.tables[entity]
            blob = self.cache.get(table, index)
            if blob is None:
                blob = record_bytes(build_record(self, entity, index))
                self.cache.put(table, index, blob)
            return blob

    def warm_cache(self, entities: tuple[str, ...] | None = None) -> int:
        """Serialize every record of ``entities`` (all by default) into the cache; return the count.

        The lock is taken per record, so a running server keeps answering.
        Records past the cache's size bound push out the oldest entries.
        """
        built = 0
        for name in entities if entities is not None else tuple(self.tables):
            for index in range(self.table(name).count):
                self.record_json(name, index)
                built += 1
        return built

    def get(self, entity: str, record_id: int) -> dict[str, Any]:
        """Return the export form of the record with ``record_id``."""
        with self.lock:
            return self.record(entity, self.index_of(entity, record_id))

    def apply(self, change: str, **params: Any) -> dict[str, Any]:
        """Apply a named change (``sell_estimate``, ``complete_job`` ...) and return the record.

        Raises ``KeyError`` for an unknown change, ``LookupError`` for an
        unknown record id and ``ValueError`` for a change that does not fit
        the record's state or for invalid parameters.
        """
        from rulesd.servicetitan.simulator.changes import CHANGES

        handler: Callable[..., dict[str, Any]] | None = CHANGES.get(change)
        if handler is None:
            known = ", ".join(sorted(CHANGES))
            raise KeyError(f"unknown change {change!r}; known changes: {known}")
        with self.lock:
            result = handler(self, **params)
            self.changes_applied += 1
        logger.info(
            "applied change %s",
            change,
            extra={"event": "simulator_change_applied", "change": change, "id": result.get("id")},
        )
        return result


STATUS_NAMES: dict[str, tuple[str, ...]] = {
    "job": JOB_STATUSES,
    "appointment": APPOINTMENT_STATUSES,
    "appointment_assignment": ASSIGNMENT_STATUSES,
    "estimate": ESTIMATE_STATUSES,
    "membership": MEMBERSHIP_STATUSES,
    "technician": TECHNICIAN_STATUSES,
    "invoice": ("Unpaid", "Paid"),
}


def customers_for_scale(scale: str) -> int:
    """Return the customer count of a named scale; raise ``ValueError`` listing the names."""
    try:
        return SCALES[scale]
    except KeyError:
        raise ValueError(
            f"unknown scale {scale!r}; known scales: {', '.join(SCALES)}"
        ) from None

