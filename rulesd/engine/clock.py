"""The engine's source of time: the system clock in production, a fake one in scenario tests.

Engine code never calls ``datetime.now()`` itself. SQL that compares due
times takes its "now" from ``Clock.sql_now()``: ``None`` for the system
clock, which the queries turn into the database's ``now()`` through
``coalesce(%(now)s, now())``, so several daemons agree on one time source;
the fake clock passes its own time instead.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

import anyio

logger = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        ...

    def sql_now(self) -> datetime | None:
        """Return the time SQL should compare with, or None for the database's ``now()``."""
        ...

    def seconds_until(self, when: datetime) -> float | None:
        """Return how many real seconds to sleep until ``when``; None when only ``advance`` moves time."""
        ...

    def subscribe(self, event: anyio.Event) -> None:
        """Set ``event`` the next time the clock jumps (only a fake clock jumps)."""
        ...


class SystemClock:
    """Wall-clock time; SQL uses the database server's ``now()``."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sql_now(self) -> datetime | None:
        return None

    def seconds_until(self, when: datetime) -> float | None:
        return max(0.0, (when - self.now()).total_seconds())

    def subscribe(self, event: anyio.Event) -> None:
        return None


class FakeClock:
    """A clock that does not move until ``advance`` or ``set`` moves it.

    Waiting engine loops subscribe an event and are woken when time jumps,
    so days pass in milliseconds.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(timezone.utc)
        if start.tzinfo is None:
            raise ValueError(f"FakeClock start time {start!r} must be timezone-aware")
        self._now = start.astimezone(timezone.utc)
        self._subscribers: list[anyio.Event] = []

    def now(self) -> datetime:
        return self._now

    def sql_now(self) -> datetime | None:
        return self._now

    def seconds_until(self, when: datetime) -> float | None:
        return None

    def subscribe(self, event: anyio.Event) -> None:
        self._subscribers.append(event)

    def advance(self, delta: timedelta) -> datetime:
        """Move time forward by ``delta``, wake every waiting loop and return the new time."""
        if delta < timedelta(0):
            raise ValueError(f"cannot move a FakeClock backwards by {delta}")
        return self.set(self._now + delta)

    def set(self, when: datetime) -> datetime:
        """Move time to ``when`` (not backwards) and wake every waiting loop."""
        when = when.astimezone(timezone.utc)
        if when < self._now:
            raise ValueError(f"cannot move a FakeClock from {self._now.isoformat()} back to {when.isoformat()}")
        self._now = when
        subscribers, self._subscribers = self._subscribers, []
        for event in subscribers:
            event.set()
        return self._now


class ScaledClock:
    """A clock that runs ``speed`` times faster than the wall clock, starting at ``start``.

    ``rulesd demo`` uses it so a two-day delay passes in about a minute.
    SQL compares due times with this clock's time, not the database's
    ``now()``, and ``seconds_until`` turns a due time into real seconds.
    """

    def __init__(self, start: datetime, speed: float) -> None:
        if start.tzinfo is None:
            raise ValueError(f"ScaledClock start time {start!r} must be timezone-aware")
        if speed <= 0:
            raise ValueError(f"ScaledClock speed must be positive, not {speed}")
        self.start = start.astimezone(timezone.utc)
        self.speed = speed
        self.origin = datetime.now(timezone.utc)  # wall-clock time at which demo time was ``start``
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)

    def sql_now(self) -> datetime | None:
        return self.now()

    def seconds_until(self, when: datetime) -> float | None:
        return max(0.0, (when - self.now()).total_seconds() / self.speed)

    def subscribe(self, event: anyio.Event) -> None:
        return None
