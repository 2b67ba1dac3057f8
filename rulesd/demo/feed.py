"""The demo's feed of new enrollments, step runs, stops and drafted messages, read from the database.

The feed reads the same tables ``rulesd status`` and ``rulesd explain``
read, so the view shows what the engine stored, not what it meant to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

logger = logging.getLogger(__name__)

ItemKind = Literal["enrolled", "step", "finished", "drafted"]
MAX_ROWS = 200  # rows read per table and poll

ENROLLMENTS = """
SELECT i.id, i.enrolled_at AS at, i.rule_id, i.entity, i.entity_id, i.current_step, i.next_run_at,
       c.name AS customer_name, e.total AS estimate_total
  FROM workflow_instances i
  LEFT JOIN st_customers c ON c.id = i.customer_id
  LEFT JOIN st_estimates e ON i.entity = 'estimate' AND e.id = i.entity_id
 WHERE i.id > %(after)s
 ORDER BY i.id
 LIMIT %(limit)s
"""

STEP_RUNS = """
SELECT r.id, coalesce(r.finished_at, r.started_at) AS at, r.instance_id, r.rule_id, r.step, r.status,
       r.action, r.detail, r.defer_until,
       i.entity, i.entity_id
  FROM workflow_step_runs r
  JOIN workflow_instances i ON i.id = r.instance_id
 WHERE r.status <> 'running' AND r.id > %(after)s
 ORDER BY r.id
 LIMIT %(limit)s
"""

FINISHED = """
SELECT id, finished_at AS at, rule_id, entity, entity_id, status, current_step, stop_reason, error
  FROM workflow_instances
 WHERE status <> 'active' AND NOT (id = ANY(%(seen)s))
 ORDER BY finished_at NULLS LAST, id
 LIMIT %(limit)s
"""

DRAFTS = """
SELECT id, created_at AS at, instance_id, rule_id, step_name, channel, recipient, status, subject, body
  FROM action_ledger
 WHERE id > %(after)s
 ORDER BY id
 LIMIT %(limit)s
"""


@dataclass(frozen=True)
class FeedItem:
    """One thing that happened, with the fields the view prints."""

    kind: ItemKind
    row: dict[str, Any]

    @property
    def at(self) -> datetime | None:
        """Demo time at which the engine stored it: the engine writes its clock's time."""
        value = self.row.get("at")
        return value if isinstance(value, datetime) else None


@dataclass(frozen=True)
class Totals:
    """Counts shown in the view's header and in the closing summary."""

    enrolled: int = 0
    steps_run: int = 0
    deferred: int = 0
    stopped: int = 0
    completed: int = 0
    drafted: int = 0


class Feed:
    """Read new rows since the last poll; one instance per demo run."""

    def __init__(self) -> None:
        self._last_instance = 0
        self._last_step_run = 0
        self._last_draft = 0
        # A step run is written as 'running' first and finished later, so
        # the cursor only moves past rows that are all finished. Rows
        # reported beyond a running one keep their ids here, so they are
        # not reported twice.
        self._reported_runs: set[int] = set()
        self._finished: set[int] = set()

    def poll(self, conn: psycopg.Connection) -> list[FeedItem]:
        """Return the items stored since the previous call, oldest first within each kind."""
        items: list[FeedItem] = []
        with conn.cursor(row_factory=dict_row) as cursor:
            for row in cursor.execute(ENROLLMENTS, {"after": self._last_instance, "limit": MAX_ROWS}).fetchall():
                self._last_instance = row["id"]
                items.append(FeedItem("enrolled", row))
            for row in cursor.execute(STEP_RUNS, {"after": self._last_step_run, "limit": MAX_ROWS}).fetchall():
                if row["id"] not in self._reported_runs:
                    self._reported_runs.add(row["id"])
                    items.append(FeedItem("step", row))
            self._advance_step_cursor(cursor)
            for row in cursor.execute(DRAFTS, {"after": self._last_draft, "limit": MAX_ROWS}).fetchall():
                self._last_draft = row["id"]
                items.append(FeedItem("drafted", row))
            for row in cursor.execute(FINISHED, {"seen": list(self._finished), "limit": MAX_ROWS}).fetchall():
                self._finished.add(row["id"])
                items.append(FeedItem("finished", row))
        return items

    def _advance_step_cursor(self, cursor: psycopg.Cursor[dict[str, Any]]) -> None:
        row = cursor.execute(
            "SELECT min(id) AS id FROM workflow_step_runs WHERE status = 'running' AND id > %s",
            (self._last_step_run,),
        ).fetchone()
        oldest_running = row["id"] if row else None
        if oldest_running is None:
            newest = max(self._reported_runs, default=self._last_step_run)
        else:
            newest = oldest_running - 1
        self._last_step_run = max(self._last_step_run, newest)
        self._reported_runs = {run for run in self._reported_runs if run > self._last_step_run}


def count_totals(conn: psycopg.Connection) -> Totals:
    """Count what the demo's database holds: the figures of the header and the summary."""
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM workflow_instances),
               (SELECT count(*) FROM workflow_step_runs WHERE status = 'done'),
               (SELECT count(*) FROM workflow_step_runs WHERE status = 'deferred'),
               (SELECT count(*) FROM workflow_instances WHERE status = 'stopped'),
               (SELECT count(*) FROM workflow_instances WHERE status = 'completed'),
               (SELECT count(*) FROM action_ledger)
        """
    ).fetchone()
    if row is None:
        return Totals()
    return Totals(*row)


def money(value: Decimal | float | None) -> str:
    """Format an amount in dollars, or an empty string when unknown."""
    return "" if value is None else f"${value:,.2f}"


def local_time(value: datetime | None, zone: Any) -> str:
    """Format a timestamp as weekday and time in ``zone`` (``Wed 11:02``)."""
    return "" if value is None else value.astimezone(zone).strftime("%a %H:%M")
