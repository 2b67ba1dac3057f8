"""``rulesd rules``: list the loaded rules and resume rules the flood guard paused."""

from __future__ import annotations

import click

from rulesd.cli.context import CliContext
from rulesd.db.connect import connect
from rulesd.engine.report import status_report

pass_context = click.make_pass_decorator(CliContext)


@click.group()
def rules() -> None:
    """Show and manage the rules the daemon runs."""


@rules.command(name="list")
@pass_context
def list_rules(context: CliContext) -> None:
    """List the rules daemons loaded into this database, with paused ones marked."""
    url = context.database_url_or_start()
    with connect(url) as conn:
        report = status_report(conn)
    if not report.definitions and not report.paused:
        click.echo("no rules loaded yet")
    for definition in report.definitions:
        paused = report.paused.get(definition["rule_id"])
        state = f"paused: {paused['paused_reason']}" if paused else "running"
        click.echo(f"{definition['rule_id']}\t{definition['version'][:12]}\t{definition['path']}\t{state}")


@rules.command()
@click.argument("rule_id")
@pass_context
def resume(context: CliContext, rule_id: str) -> None:
    """Resume RULE_ID after the flood guard paused it; its enrollments of the last hour no longer count."""
    url = context.database_url_or_start()
    with connect(url) as conn:
        cursor = conn.execute(
            """
            UPDATE workflow_rule_state
               SET paused_at = NULL, paused_reason = NULL, resumed_at = now(), updated_at = now()
             WHERE rule_id = %s AND paused_at IS NOT NULL
            """,
            (rule_id,),
        )
        conn.commit()
    if cursor.rowcount == 0:
        click.echo(f"rule {rule_id} is not paused; nothing to resume", err=True)
        raise SystemExit(1)
    click.echo(f"resumed rule {rule_id}; running daemons pick it up on their next pass")
