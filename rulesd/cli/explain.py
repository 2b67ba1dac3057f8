"""``rulesd explain ENTITY:ID``: the timeline of one record through the workflow engine."""

from __future__ import annotations

import click

from rulesd.cli.context import CliContext
from rulesd.db.connect import connect
from rulesd.engine.report import explain as explain_record
from rulesd.servicetitan.catalog import ENTITIES

pass_context = click.make_pass_decorator(CliContext)


def parse_record(text: str) -> tuple[str, int]:
    """Parse ``estimate:123`` into (entity, id); raise ``click.BadParameter`` naming the problem."""
    entity, separator, raw_id = text.partition(":")
    if not separator or not raw_id.strip().isdigit():
        raise click.BadParameter(f"expected ENTITY:ID such as estimate:123, got {text!r}")
    if entity not in ENTITIES:
        known = ", ".join(sorted(ENTITIES))
        raise click.BadParameter(f"unknown entity {entity!r}; known entities: {known}")
    return entity, int(raw_id)


@click.command()
@click.argument("record")
@pass_context
def explain(context: CliContext, record: str) -> None:
    """Show events, enrollments, steps, deferrals, stops and messages for RECORD (e.g. estimate:123)."""
    entity, entity_id = parse_record(record)
    url = context.database_url_or_start()
    with connect(url) as conn:
        entries = explain_record(conn, entity, entity_id)
    if not entries:
        click.echo(f"{entity}:{entity_id}: no events or enrollments recorded")
        return
    click.echo(f"{entity}:{entity_id}")
    for entry in entries:
        when = entry.at.strftime("%Y-%m-%d %H:%M:%S %Z")
        click.echo(f"  {when}  {entry.kind:<9} {entry.summary}")
