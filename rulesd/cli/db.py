"""``rulesd db``: apply migrations and show which are applied."""

from __future__ import annotations

import click

from rulesd.cli.context import CliContext
from rulesd.db import migrate
from rulesd.db.server import redact_url

pass_context = click.make_pass_decorator(CliContext)


@click.group()
def db() -> None:
    """Manage the rulesd database schema."""


@db.command()
@pass_context
def upgrade(context: CliContext) -> None:
    """Apply every pending migration (safe to run from several processes at once)."""
    url = context.database_url_or_start()
    applied = migrate.upgrade(url)
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
        click.echo(f"{len(applied)} migration(s) applied to {redact_url(url)}")
    else:
        click.echo(f"database is up to date ({redact_url(url)})")


@db.command()
@pass_context
def status(context: CliContext) -> None:
    """List every migration and whether it is applied; exit 1 when any is pending or changed."""
    url = context.database_url_or_start()
    rows = migrate.status(url)
    click.echo(f"database: {redact_url(url)}")
    for row in rows:
        when = row.applied_at.strftime("%Y-%m-%d %H:%M:%S %Z") if row.applied_at else ""
        click.echo(f"  {row.version:04d}_{row.name:<32} {row.state:<8} {when}")
    counts = {state: sum(1 for r in rows if r.state == state) for state in ("applied", "pending", "changed", "unknown")}
    click.echo(", ".join(f"{count} {state}" for state, count in counts.items() if count) or "no migrations")
    if counts["pending"] or counts["changed"] or counts["unknown"]:
        raise SystemExit(1)
