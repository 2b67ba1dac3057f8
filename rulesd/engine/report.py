"""Read-only queries behind ``rulesd status`` and ``rulesd explain``.

Tables owned by other parts of rulesd (the agent's ``action_ledger``, the
sync's ``st_sync_log``) may not exist in an older database, so those
queries check with ``to_regclass`` first and return nothing instead of failing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

logger = logging.getLogger(__name__)

DAEMON_STALE_AFTER = "60 seconds"  # a daemon without a heartbeat for this long is shown as not running


@dataclass
class StatusReport:
    """Everything ``rulesd status`` prints."""

    paused: dict[str, dict[str, Any]] = field(default_factory=dict)
    definitions: list[dict[str, Any]] = field(default_factory=list)
    active: list[dict[str, Any]] = field(default_factory=list)
    due_next_hour: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    unknown_messages: list[dict[str, Any]] = field(default_factory=list)
    last_sync: list[dict[str, Any]] = field(default_factory=list)
    daemons: list[dict[str, Any]] = field(default_factory=list)
    unprocessed_events: int = 0


@dataclass(frozen=True)
class TimelineEntry:
    """One line of ``rulesd explain``: when, what, and the details."""

    at: datetime
    kind: str
    summary: str
    instance_id: int | None = None


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _rows(conn: psycopg.Connection[Any], query: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


def status_report(conn: psycopg.Connection[Any]) -> StatusReport:
    """Collect the engine's state from the database."""
    report = StatusReport()

    report.paused = {
        row["rule_id"]: row
        for row in _rows(conn, "SELECT * FROM workflow_rule_state WHERE paused_at IS NOT NULL ORDER BY rule_id")
    }
    report.definitions = _rows(
        conn,
        """
        SELECT DISTINCT ON (rule_id) rule_id, version, path, last_loaded_at
          FROM workflow_definitions ORDER BY rule_id, last_loaded_at DESC
        """,
    )
    report.active = _rows(
        conn,
        """
        SELECT rule_id, current_step, count(*) AS enrollments,
               count(*) FILTER (WHERE lease_owner IS NOT NULL AND lease_expires_at > now()) AS running
          FROM workflow_instances WHERE status = 'active'
         GROUP BY rule_id, current_step ORDER BY rule_id, current_step
        """,
    )
    report.due_next_hour = _rows(
        conn,
        """
        SELECT rule_id, current_step, count(*) AS due, min(next_run_at) AS first_due
          FROM workflow_instances
         WHERE status = 'active' AND next_run_at <= now() + interval '1 hour'
         GROUP BY rule_id, current_step ORDER BY first_due
        """,
    )
    report.failures = _rows(
        conn,
        """
        SELECT id AS instance_id, rule_id, entity, entity_id, current_step, error, finished_at
          FROM workflow_instances
         WHERE status = 'failed' AND finished_at > now() - interval '1 day'
         ORDER BY finished_at DESC LIMIT 50
        """,
    )

    if table_exists(conn, "action_ledger"):
        report.unknown_messages = _rows(
            conn,
            """
            SELECT id, instance_id, rule_id, step_name, channel, recipient, created_at
              FROM action_ledger WHERE status = 'unknown' ORDER BY created_at
            """,
        )
    if table_exists(conn, "st_sync_log"):
        report.last_sync = _rows(
            conn,
            """
            SELECT DISTINCT ON (entity) entity, kind, status, started_at, finished_at, fetched, error
              FROM st_sync_log ORDER BY entity, started_at DESC
            """,
        )

    report.daemons = _rows(
        conn,
        f"""
        SELECT owner, hostname, pid, started_at, heartbeat_at, listener_state, listener_changed_at, rules_loaded,
               heartbeat_at > now() - interval '{DAEMON_STALE_AFTER}' AS alive
          FROM workflow_daemons
         WHERE stopped_at IS NULL AND heartbeat_at > now() - interval '1 day'
         ORDER BY started_at
        """,
    )
    row = conn.execute("SELECT count(*) FROM workflow_events WHERE processed_at IS NULL").fetchone()
    report.unprocessed_events = int(row[0]) if row else 0
    return report


def explain(conn: psycopg.Connection[Any], entity: str, entity_id: int) -> list[TimelineEntry]:
    """Return the timeline of one record: its events, enrollments, steps, stops and messages, oldest first."""
    entries: list[TimelineEntry] = []
    for event in _rows(
        conn,
        """
        SELECT id, kind, changes, status_from, status_to, occurred_at, processed_at
          FROM workflow_events WHERE entity = %s AND entity_id = %s ORDER BY id
        """,
        (entity, entity_id),
    ):
        entries.append(TimelineEntry(event["occurred_at"], "event", _describe_event(event)))

    instances = _rows(
        conn,
        "SELECT * FROM workflow_instances WHERE entity = %s AND entity_id = %s ORDER BY id",
        (entity, entity_id),
    )
    for instance in instances:
        entries.extend(_instance_entries(instance))
    instance_ids = [instance["id"] for instance in instances]
    for run in _rows(
        conn, "SELECT * FROM workflow_step_runs WHERE instance_id = ANY(%s) ORDER BY id", (instance_ids,)
    ):
        entries.append(TimelineEntry(run["finished_at"] or run["started_at"], "step", _describe_run(run), run["instance_id"]))
    if instance_ids and table_exists(conn, "action_ledger"):
        for message in _rows(
            conn,
            """
            SELECT instance_id, step_name, channel, recipient, status, error, created_at, sent_at
              FROM action_ledger WHERE instance_id = ANY(%s) ORDER BY id
            """,
            (instance_ids,),
        ):
            entries.append(
                TimelineEntry(message["sent_at"] or message["created_at"], "message", _describe_message(message), message["instance_id"])
            )
    entries.sort(key=lambda entry: entry.at)
    return entries


def _describe_event(event: dict[str, Any]) -> str:
    text = f"event {event['id']}: {event['kind']}"
    if event["kind"] == "status_changed":
        text += f" {event['status_from']} -> {event['status_to']}"
    changes = event["changes"] or {}
    if changes and event["kind"] != "status_changed":
        text += " (" + ", ".join(sorted(changes)) + ")"
    if event["processed_at"] is None:
        text += " [not processed yet]"
    return text


def _instance_entries(instance: dict[str, Any]) -> list[TimelineEntry]:
    instance_id = instance["id"]
    entries = [
        TimelineEntry(
            instance["enrolled_at"],
            "enrolled",
            f"enrolled in rule {instance['rule_id']} (enrollment {instance_id}, key {instance['enrollment_key']}, "
            f"event {instance['event_id']})",
            instance_id,
        )
    ]
    status = instance["status"]
    if status == "active":
        when = instance["next_run_at"].isoformat() if instance["next_run_at"] else "not scheduled"
        entries.append(
            TimelineEntry(
                instance["updated_at"], "waiting", f"next step {instance['current_step']} due {when}", instance_id
            )
        )
    elif instance["finished_at"] is not None:
        reason = instance["stop_reason"] or instance["error"] or ""
        summary = f"{status} enrollment {instance_id}" + (f": {reason}" if reason else "")
        entries.append(TimelineEntry(instance["finished_at"], status, summary, instance_id))
    return entries


def _describe_run(run: dict[str, Any]) -> str:
    text = f"step {run['step']} attempt {run['attempt']}: {run['status']}"
    if run["status"] == "deferred" and run["defer_until"] is not None:
        text += f" until {run['defer_until'].isoformat()}"
    if run["detail"]:
        text += f" ({run['detail']})"
    if run["dry_run"]:
        text += " [dry run]"
    if run["lease_lost"]:
        text += " [lease lost: did not change the enrollment]"
    return text


def _describe_message(message: dict[str, Any]) -> str:
    text = f"{message['channel']} to {message['recipient']} for step {message['step_name']}: {message['status']}"
    if message["status"] == "unknown":
        text += " (the outcome was lost; check with the provider before sending again)"
    if message["error"]:
        text += f" ({message['error']})"
    return text
