"""Sending windows: parsing and the next allowed time across days, weekends and DST."""

from __future__ import annotations

from datetime import datetime, time, timezone

import pytest

from rulesd.rules.windows import parse_window

CHICAGO = "America/Chicago"


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def test_window_business_hours_is_weekdays_8_to_17() -> None:
    window = parse_window("business_hours")

    assert window.days == frozenset(range(5))
    assert (window.start, window.end) == (time(8), time(17))


@pytest.mark.parametrize(
    ("spec", "days"),
    [
        ("09:00-17:00", set(range(7))),
        ("Mon-Sat 09:00-18:00", {0, 1, 2, 3, 4, 5}),
        ("Sat-Mon 9:00-12:00", {5, 6, 0}),
        ("Mon,Wed,Friday 09:00-12:00", {0, 2, 4}),
    ],
)
def test_window_parses_days(spec: str, days: set[int]) -> None:
    assert parse_window(spec).days == frozenset(days)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mornings", "expected business_hours"),
        ("17:00-09:00", "must be later than the start"),
        ("Mon-Fry 09:00-17:00", "unknown day 'Fry'"),
        ("25:00-26:00", "25:00 is not a time of day"),
    ],
)
def test_window_rejects(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(spec)


def test_window_inside_returns_same_instant() -> None:
    at = _utc(2026, 12, 2, 16, 30)  # Wednesday 10:30 in Chicago

    assert parse_window("business_hours").next_allowed(at, CHICAGO) == at


def test_window_before_opening_waits_for_opening() -> None:
    at = _utc(2026, 12, 2, 11, 0)  # Wednesday 05:00 in Chicago

    assert parse_window("business_hours").next_allowed(at, CHICAGO) == _utc(2026, 12, 2, 14, 0)


def test_window_friday_evening_waits_for_monday() -> None:
    at = _utc(2026, 12, 4, 23, 0)  # Friday 17:00 in Chicago, the end is exclusive

    assert parse_window("business_hours").next_allowed(at, CHICAGO) == _utc(2026, 12, 7, 14, 0)


def test_window_opening_follows_daylight_saving() -> None:
    window = parse_window("09:00-17:00")
    # Saturday 2026-03-07 20:00 in Chicago (CST); the next opening is Sunday 09:00 CDT.
    at = _utc(2026, 3, 8, 2, 0)

    assert window.next_allowed(at, CHICAGO) == _utc(2026, 3, 8, 14, 0)


def test_window_result_is_utc() -> None:
    result = parse_window("Mon-Sat 09:00-18:00").next_allowed(_utc(2026, 12, 6, 12, 0), "Europe/Berlin")

    assert result.tzinfo == timezone.utc
    assert result == _utc(2026, 12, 7, 8, 0)


def test_window_until_midnight() -> None:
    window = parse_window("Fri 18:00-24:00")
    at = _utc(2026, 12, 5, 5, 30)  # Friday 23:30 in Chicago

    assert window.next_allowed(at, CHICAGO) == at
    assert window.next_allowed(_utc(2026, 12, 5, 6, 0), CHICAGO) == _utc(2026, 12, 12, 0, 0)
