"""Per-customer frequency caps across all rules, over rolling windows.

``messaging.sms_per_day`` counts the customer's SMS in the 24 hours before
now, ``sms_per_week`` in the 7 days before now (likewise for e-mail).
Pending and unknown ledger rows count because they may have been
delivered. Dry_run rows count only in a dry run, so drafts of shadow
rules never hold back live messages. A cap of 0 allows no message on the channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from rulesd.agent import ledger
from rulesd.agent.addresses import Channel
from rulesd.config import MessagingSettings

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class CapCheck:
    """Whether the customer may get one more message on a channel now.

    When not ``allowed``, ``allowed_at`` is the first time the rolling
    windows let one through, or None when a cap of 0 never does.
    """

    allowed: bool
    allowed_at: datetime | None = None
    reason: str = ""


def limits_for(settings: MessagingSettings, channel: Channel) -> tuple[tuple[int, timedelta, str], ...]:
    if channel == "sms":
        return ((settings.sms_per_day, DAY, "day"), (settings.sms_per_week, WEEK, "week"))
    return ((settings.emails_per_day, DAY, "day"), (settings.emails_per_week, WEEK, "week"))


async def check_cap(
    conn: psycopg.AsyncConnection,
    settings: MessagingSettings,
    customer_id: int | None,
    channel: Channel,
    now: datetime,
    *,
    dry_run: bool,
) -> CapCheck:
    """Check the customer's caps on ``channel`` at ``now``; a step with no customer has no cap."""
    if customer_id is None:
        return CapCheck(allowed=True)
    sent = await ledger.recent_sends(conn, customer_id, channel, now - WEEK, include_dry_run=dry_run)
    blocked: list[CapCheck] = []
    for cap, window, label in limits_for(settings, channel):
        in_window = [at for at in sent if at > now - window]
        if len(in_window) < cap:
            continue
        reason = f"the customer already got {len(in_window)} {channel} message(s) in the last {label} (cap {cap})"
        if cap <= 0:
            return CapCheck(allowed=False, allowed_at=None, reason=reason)
        # The window lets one more through once enough of the oldest messages age out.
        blocked.append(CapCheck(False, in_window[len(in_window) - cap] + window, reason))
    if not blocked:
        return CapCheck(allowed=True)
    return max(blocked, key=lambda check: check.allowed_at or now)
