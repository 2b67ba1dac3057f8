"""Parse and format durations such as ``30s``, ``15m``, ``2h``, ``3d`` and ``1w``.

Rule files and the configuration share this syntax. A bare number is a
count of seconds.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_COMPOUND = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str | int | float) -> timedelta:
    """Parse ``text`` into a timedelta; raise ``ValueError`` naming the bad value.

    Accepts one number with a unit (``2d``), several joined together
    (``1d12h``), or a bare number of seconds.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: expected a number with a unit such as 30m, 2h or 3d")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return timedelta(seconds=text)
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        return timedelta(seconds=float(stripped))
    if _DURATION.match(stripped):
        number, unit = _DURATION.match(stripped).groups()  # type: ignore[union-attr]
        return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
    parts = _COMPOUND.findall(stripped)
    if parts and "".join(n + u for n, u in parts) == stripped.replace(" ", ""):
        return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))
    raise ValueError(
        f"invalid duration {text!r}: expected a number with a unit s, m, h, d or w, such as 30m, 2h or 3d"
    )


def format_duration(value: timedelta) -> str:
    """Format ``value`` in the largest units that keep it exact (``1d12h``)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
