"""Parsing of ServiceTitan timestamps, money and typed catalog columns."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from rulesd.servicetitan.catalog import ENTITIES
from rulesd.servicetitan.records import extract_columns, parse_datetime, parse_money


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-07-19T20:35:38.2876004Z", datetime(2021, 7, 19, 20, 35, 38, 287600, tzinfo=timezone.utc)),
        ("2025-10-13T00:00:00", datetime(2025, 10, 13, tzinfo=timezone.utc)),
        ("2024-01-01", datetime(2024, 1, 1, tzinfo=timezone.utc)),
        ("2024-01-01T10:00:00+02:00", datetime(2024, 1, 1, 8, tzinfo=timezone.utc)),
        ("2024-01-01T10:00:00.5-0500", datetime(2024, 1, 1, 15, 0, 0, 500000, tzinfo=timezone.utc)),
    ],
)
def test_parse_datetime_forms(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


def test_parse_datetime_empty_is_none() -> None:
    assert parse_datetime(None) is None
    assert parse_datetime("") is None


def test_parse_datetime_invalid_names_value() -> None:
    with pytest.raises(ValueError, match="'yesterday'"):
        parse_datetime("yesterday")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120.50", Decimal("120.50")), ("0.00", Decimal("0.00")), (0.1, Decimal("0.1")),
     (42, Decimal(42)), ("1,250.00", Decimal("1250.00"))],
)
def test_parse_money_forms(value: object, expected: Decimal) -> None:
    assert parse_money(value) == expected


@pytest.mark.parametrize("value", ["abc", "NaN", True, [1]])
def test_parse_money_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="invalid amount"):
        parse_money(value)


def test_extract_columns_invoice_money_and_nested() -> None:
    record = {
        "id": 5, "active": True, "createdOn": "2024-01-01T00:00:00Z",
        "modifiedOn": "2024-01-02T03:04:05.1234567Z", "total": "108.25", "balance": "0.00",
        "customer": {"id": 77, "name": "Ann"}, "job": {"id": 9, "number": "10009"},
    }
    values = extract_columns(ENTITIES["invoice"], record)
    assert values["total"] == Decimal("108.25")
    assert values["balance"] == Decimal("0.00")
    assert values["customer_id"] == 77
    assert values["job_number"] == "10009"
    assert values["modified_on"] == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert values["location_id"] is None


def test_extract_columns_bad_value_becomes_none() -> None:
    record = {"id": 5, "balance": "lots", "name": "Ann"}
    values = extract_columns(ENTITIES["customer"], record)
    assert values["balance"] is None
    assert values["name"] == "Ann"


def test_extract_columns_missing_id_raises() -> None:
    with pytest.raises(ValueError, match="no id"):
        extract_columns(ENTITIES["customer"], {"name": "Ann"})
