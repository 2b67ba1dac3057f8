"""Quiet hours: no message reaches a customer at night in their local time.

A step that is due inside quiet hours is deferred to the end of them; it is
never dropped. The window is ``messaging.quiet_hours`` (``21:00-08:00``
means from 21:00 until 08:00 the next morning); ``off`` or an empty value
turns it off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from rulesd.errors import ConfigError

_SPEC = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class QuietHours:
    """A daily quiet window in local time; ``start`` may be later than ``end`` (overnight)."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def quiet_until(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """Return the UTC end of the quiet window ``now`` is in, or None when messages may go.

        ``now`` must be timezone-aware.
        """
        local = now.astimezone(zone)
        if not self.contains(local.timetz().replace(tzinfo=None)):
            return None
        end_date = local.date()
        if local.time() >= self.end:
            end_date += timedelta(days=1)
        # A wall time inside a DST gap resolves to the later offset.
        end_local = datetime.combine(end_date, self.end, tzinfo=zone)
        return end_local.astimezone(timezone.utc)


def parse_quiet_hours(spec: str | None) -> QuietHours | None:
    """Parse ``HH:MM-HH:MM``; return None for ``off`` or an empty value."""
    if spec is None or spec.strip().lower() in ("", "off", "none"):
        return None
    match = _SPEC.match(spec)
    if match is None:
        raise ConfigError(
            f"configuration key messaging.quiet_hours: invalid value {spec!r}",
            hint="write the quiet window as HH:MM-HH:MM, such as 21:00-08:00, or off",
        )
    start_hour, start_minute, end_hour, end_minute = (int(part) for part in match.groups())
    try:
        return QuietHours(time(start_hour, start_minute), time(end_hour, end_minute))
    except ValueError as exc:
        raise ConfigError(f"configuration key messaging.quiet_hours: {spec!r}: {exc}") from exc
