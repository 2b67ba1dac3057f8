"""Parsing ServiceTitan's value forms: timestamps, money, and typed catalog columns."""

from __future__ import annotations

import json
import logging
import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from rulesd.servicetitan.catalog import Column, Entity

logger = logging.getLogger(__name__)

MONEY_MAX_DIGITS = 15  # digits before the decimal point; no invoice reaches a quadrillion
BIGINT_RANGE = range(-(2**63), 2**63)  # Postgres bigint

# ServiceTitan sends up to 7 fractional digits (.NET ticks), which
# ``datetime.fromisoformat`` rejects; the 7th digit is dropped.
_DATETIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<fraction>\d+))?)?"
    r"(?P<offset>Z|z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(value: Any) -> datetime | None:
    """Parse a ServiceTitan timestamp into an aware UTC ``datetime``.

    Accepts ``2021-07-19T20:35:38.2876004Z``, explicit offsets, values with
    no offset (ServiceTitan means UTC) and bare dates (midnight UTC).
    Returns None for None or an empty string; raises ``ValueError`` naming
    the value for anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise ValueError(f"invalid timestamp {value!r}: expected an ISO-8601 string")
    match = _DATETIME.match(value.strip())
    if match is None:
        raise ValueError(f"invalid timestamp {value!r}: expected an ISO-8601 string")

    text = match["date"] + "T" + (match["time"] or "00:00:00")
    if match["fraction"]:
        text += "." + match["fraction"][:6].ljust(6, "0")
    offset = match["offset"]
    if offset is None or offset in ("Z", "z"):
        text += "+00:00"
    elif ":" not in offset:
        text += offset[:3] + ":" + offset[3:]
    else:
        text += offset
    try:
        parsed = datetime.fromisoformat(text)
        # An offset can push .NET's DateTime.MinValue or MaxValue (year 1 or 9999) out of range.
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid timestamp {value!r}: {exc}") from exc


def parse_money(value: Any) -> Decimal | None:
    """Parse money sent as a JSON string (``"120.50"``) or number into a ``Decimal``.

    Floats go through ``repr`` so 0.1 stays 0.1. Returns None for None or an
    empty string; raises ``ValueError`` naming the value for anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"invalid amount {value!r}: expected a number or a numeric string")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip().replace(",", ""))
        except InvalidOperation:
            raise ValueError(
                f"invalid amount {value!r}: expected a number or a numeric string"
            ) from None
        if not amount.is_finite():
            raise ValueError(f"invalid amount {value!r}: not a finite number")
        if amount and amount.adjusted() > MONEY_MAX_DIGITS:
            # Postgres numeric overflows near 10**131072, and one such value fails the whole COPY batch.
            raise ValueError(f"invalid amount {value!r}: more than {MONEY_MAX_DIGITS} digits before the point")
        return amount
    raise ValueError(f"invalid amount {value!r}: expected a number or a numeric string")


def lookup(record: dict[str, Any], source: str) -> Any:
    """Return the value at a dotted ``source`` path, or None when any step is missing."""
    value: Any = record
    for key in source.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
        if value is None:
            return None
    return value


def convert_value(column: Column, value: Any) -> Any:
    """Convert one API value to the Python type of ``column``; raise ``ValueError`` if invalid."""
    if value is None:
        return None
    if column.type in ("bigint", "integer"):
        if isinstance(value, bool):
            raise ValueError(f"invalid integer {value!r}")
        number: int | None = None
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("-").isascii() and value.strip().lstrip("-").isdigit():
            number = int(value)
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if number is None:
            raise ValueError(f"invalid integer {value!r}")
        if number not in BIGINT_RANGE:
            raise ValueError(f"invalid integer {value!r}: out of the 64-bit range")
        return number
    if column.type == "numeric":
        return parse_money(value)
    if column.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"invalid boolean {value!r}")
    if column.type == "timestamptz":
        return parse_datetime(value)
    if column.type == "jsonb":
        return json.dumps(value)
    # text: enums sometimes arrive as integers, so store their string form.
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def extract_columns(entity: Entity, record: dict[str, Any]) -> dict[str, Any]:
    """Return the typed value of every writable catalog column of ``entity`` in ``record``.

    A value that cannot be converted becomes None and is logged at WARNING,
    because the whole record is still kept in ``raw`` and one odd field must
    not stop a sync. A record without an integer ``id`` raises ``ValueError``.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{entity.name} record is not a JSON object: {record!r:.60}")
    values: dict[str, Any] = {}
    for column in entity.writable_columns:
        assert column.source is not None
        raw_value = lookup(record, column.source)
        try:
            values[column.name] = convert_value(column, raw_value)
        except ValueError as exc:
            if column.name == "id":
                raise ValueError(f"{entity.name} record has an invalid id: {exc}") from exc
            logger.warning(
                "%s %s: column %s left empty: %s",
                entity.name,
                record.get("id"),
                column.name,
                exc,
                extra={"event": "record_value_invalid", "entity": entity.name,
                       "entity_id": record.get("id"), "column": column.name},
            )
            values[column.name] = None
    if values.get("id") is None:
        raise ValueError(f"{entity.name} record has no id: keys {sorted(record)[:10]}")
    return values
