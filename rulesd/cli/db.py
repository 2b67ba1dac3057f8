"""``rulesd db``: apply migrations, show which are applied, and open psql on the database."""

from __future__ import annotations

import os
import subprocess

import click
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rulesd.cli.context import CliContext
from rulesd.db import migrate
from rulesd.db.server import bundled_binary, redact_url

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


@db.command(context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@pass_context
def shell(context: CliContext, psql_args: tuple[str, ...]) -> None:
    """Open psql on the rulesd database, starting the embedded Postgres when no URL is set.

    Arguments after the command go to psql, for example
    `rulesd db shell -c "SELECT count(*) FROM st_estimates"`. The embedded
    server keeps running until psql exits.
    """
    url = context.database_url_or_start()
    # The password goes in the environment, not on the command line, where
    # other users of the machine could read it.
    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    psql = bundled_binary("psql")
    try:
        code = subprocess.call([str(psql), "--dbname", make_conninfo(**params), *psql_args], env=env)
    except OSError as exc:
        raise click.ClickException(f"cannot run {psql}: {exc.strerror}") from exc
    raise SystemExit(code)
