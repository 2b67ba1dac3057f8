"""``rulesd status``: rules, enrollments, due steps, failures, messages to check, syncs and listeners."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from rulesd.cli.context import CliContext
from rulesd.db.connect import connect
from rulesd.engine.report import StatusReport, status_report

pass_context = click.make_pass_decorator(CliContext)


@click.command()
@pass_context
def status(context: CliContext) -> None:
    """Show the workflow engine's state as stored in the database."""
    url = context.database_url_or_start()
    with connect(url) as conn:
        report = status_report(conn)
    for line in format_status(report):
        click.echo(line)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value else "-"


def format_status(report: StatusReport) -> list[str]:
    """Format ``report`` as the lines ``rulesd status`` prints."""
    lines = ["Rules loaded:"]
    if not report.definitions:
        lines.append("  none (no daemon has loaded rules into this database yet)")
    for definition in report.definitions:
        rule_id = definition["rule_id"]
        paused = report.paused.get(rule_id)
        state = f"PAUSED since {_time(paused['paused_at'])}: {paused['paused_reason']}" if paused else "running"
        lines.append(f"  {rule_id} (version {definition['version'][:12]}, {definition['path']}): {state}")
    for rule_id, paused in report.paused.items():
        if rule_id not in {d["rule_id"] for d in report.definitions}:
            lines.append(f"  {rule_id}: PAUSED: {paused['paused_reason']}")
    if report.paused:
        lines.append("  resume a paused rule with `rulesd rules resume RULE_ID`")

    lines.append("Active enrollments:")
    lines += _table(report.active, lambda r: f"  {r['rule_id']} / {r['current_step']}: {r['enrollments']} ({r['running']} running)")
    lines.append("Steps due in the next hour:")
    lines += _table(report.due_next_hour, lambda r: f"  {r['rule_id']} / {r['current_step']}: {r['due']}, first at {_time(r['first_due'])}")
    lines.append("Failures in the last day:")
    lines += _table(
        report.failures,
        lambda r: f"  enrollment {r['instance_id']} ({r['rule_id']}, {r['entity']}:{r['entity_id']}) at {_time(r['finished_at'])}: {r['error']}",
    )
    lines.append("Messages with an unknown outcome (check with the provider; they are never re-sent):")
    lines += _table(
        report.unknown_messages,
        lambda r: f"  ledger {r['id']}: {r['channel']} to {r['recipient']} ({r['rule_id']} / {r['step_name']}, enrollment {r['instance_id']}) at {_time(r['created_at'])}",
    )
    lines.append("Last sync per entity:")
    lines += _table(
        report.last_sync,
        lambda r: f"  {r['entity']}: {r['kind']} {r['status']} at {_time(r['finished_at'] or r['started_at'])}, {r['fetched']} fetched"
        + (f": {r['error']}" if r["error"] else ""),
    )
    lines.append(f"Unprocessed change events: {report.unprocessed_events}")
    lines.append("Daemons:")
    lines += _table(
        report.daemons,
        lambda r: f"  {r['hostname']} pid {r['pid']} (owner {r['owner']}): listener {r['listener_state']} since "
        f"{_time(r['listener_changed_at'])}, {r['rules_loaded']} rule(s), last heartbeat {_time(r['heartbeat_at'])}"
        + ("" if r["alive"] else " [no heartbeat for over a minute]"),
    )
    return lines


def _table(rows: list[dict[str, Any]], render: Any) -> list[str]:
    return [render(row) for row in rows] if rows else ["  none"]
