"""The daily token budget: agent steps pause once the day's tokens are spent.

Every model call's usage is stored in ``agent_token_usage``. The budget
counts input, output, cache-write and cache-read tokens alike over the
calendar day in the business time zone. A step that finds it spent is
deferred to the next midnight there, with one WARNING log line per step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg

logger = logging.getLogger(__name__)

USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass(frozen=True)
class BudgetCheck:
    spent: int
    budget: int
    resets_at: datetime

    @property
    def exhausted(self) -> bool:
        return self.budget > 0 and self.spent >= self.budget


def day_bounds(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the UTC start and end of ``now``'s calendar day in ``zone``."""
    local_day = now.astimezone(zone).date()
    start = datetime.combine(local_day, time(0), tzinfo=zone)
    end = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


async def check_budget(conn: psycopg.AsyncConnection, budget: int, now: datetime, zone: ZoneInfo) -> BudgetCheck:
    """Sum today's tokens; a budget of 0 or less means no budget."""
    start, end = day_bounds(now, zone)
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT coalesce(sum(input_tokens + output_tokens + cache_creation_input_tokens"
            " + cache_read_input_tokens), 0) FROM agent_token_usage"
            " WHERE called_at >= %s AND called_at < %s",
            (start, end),
        )
        row = await cur.fetchone()
    spent = int(row[0]) if row else 0
    return BudgetCheck(spent=spent, budget=budget, resets_at=end)


async def record_usage(
    conn: psycopg.AsyncConnection,
    *,
    instance_id: int,
    step_run_id: int,
    rule_id: str,
    step_name: str,
    model: str,
    usage: dict[str, int],
    called_at: datetime,
) -> None:
    """Store one model call's token counts."""
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO agent_token_usage (instance_id, step_run_id, rule_id, step_name, model,"
            " input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,"
            " called_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                instance_id, step_run_id, rule_id, step_name, model,
                *(usage.get(key, 0) for key in USAGE_KEYS),
                called_at,
            ),
        )
