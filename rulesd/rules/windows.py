"""Sending windows: ``business_hours``, ``"09:00-17:00"`` or ``"Mon-Sat 09:00-18:00"``.

A window is a set of weekdays and one daily span, read in the timezone
the caller passes (the customer's or the business's). The span's end is
exclusive and must be later than its start; a window never spans
midnight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
BUSINESS_HOURS = "business_hours"

_SPEC = re.compile(r"^\s*(?:(?P<days>[A-Za-z ,\-]+?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")


@dataclass(frozen=True)
class DailyWindow:
    """A sending window, satisfying ``rulesd.rules.model.Window``.

    ``days`` contains weekday numbers, Monday being 0. ``start`` is inclusive and
    ``end`` exclusive, both local wall-clock times.
    """

    source: str
    days: frozenset[int]
    start: time
    end: time

    def contains(self, at: datetime, timezone_name: str) -> bool:
        """Return whether ``at`` (aware) falls inside the window in ``timezone_name``."""
        local = at.astimezone(ZoneInfo(timezone_name))
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def next_allowed(self, at: datetime, timezone: str) -> datetime:
        """Return ``at`` when it is inside the window, else the window's next opening in UTC.

        A local opening time that a daylight-saving change skips resolves
        the way ``zoneinfo`` does (fold 0), which is at most one hour off.
        """
        zone = ZoneInfo(timezone)
        local = at.astimezone(zone)
        for day_offset in range(8):
            day: date = local.date() + timedelta(days=day_offset)
            if day.weekday() not in self.days:
                continue
            opening = datetime.combine(day, self.start, tzinfo=zone)
            closing = datetime.combine(day, self.end, tzinfo=zone)
            if day_offset == 0 and opening <= local < closing:
                return at.astimezone(_UTC)
            if local < opening:
                return opening.astimezone(_UTC)
        # Unreachable for a window with at least one day, which parse_window guarantees.
        raise ValueError(f"window {self.source!r} has no day to open on")


_UTC = timezone.utc


def parse_window(text: str) -> DailyWindow:
    """Parse a window specification, or raise ``ValueError`` with a message naming the bad part."""
    if not isinstance(text, str):
        raise ValueError(f"invalid window {text!r}: expected business_hours or a span such as \"09:00-17:00\"")
    if text.strip() == BUSINESS_HOURS:
        return DailyWindow(text, frozenset(range(5)), time(8, 0), time(17, 0))
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(
            f"invalid window {text!r}: expected business_hours, \"09:00-17:00\" or \"Mon-Sat 09:00-18:00\""
        )
    start = _parse_time(match.group("start"), text)
    end = _parse_time(match.group("end"), text)
    if end <= start:
        raise ValueError(f"invalid window {text!r}: the end {match.group('end')} must be later than the start")
    days = _parse_days(match.group("days"), text) if match.group("days") else frozenset(range(7))
    return DailyWindow(text, days, start, end)


def _parse_time(text: str, spec: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours == 24 and minutes == 0:
        return time.max
    if hours > 23 or minutes > 59:
        raise ValueError(f"invalid window {spec!r}: {text} is not a time of day")
    return time(hours, minutes)


def _parse_days(text: str, spec: str) -> frozenset[int]:
    days: set[int] = set()
    for part in re.split(r"\s*,\s*", text.strip()):
        bounds = [bound.strip() for bound in part.split("-")]
        if len(bounds) > 2 or not all(bounds):
            raise ValueError(f"invalid window {spec!r}: cannot read days {part!r}")
        first = _day_number(bounds[0], spec)
        last = _day_number(bounds[-1], spec)
        day = first
        while True:
            days.add(day)
            if day == last:
                break
            day = (day + 1) % 7
    return frozenset(days)


def _day_number(name: str, spec: str) -> int:
    lowered = name.lower()
    for number, full_name in enumerate(_FULL_DAY_NAMES):
        if len(lowered) >= 3 and full_name.startswith(lowered):
            return number
    raise ValueError(f"invalid window {spec!r}: unknown day {name!r}; use Mon, Tue, Wed, Thu, Fri, Sat, Sun")


def check_timezone(name: str) -> str | None:
    """Return an error message when ``name`` is not an IANA timezone, else None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {name!r}; use an IANA name such as America/Chicago"
    return None
