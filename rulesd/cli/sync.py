"""``rulesd sync``: load, refresh or reconcile the Postgres mirror, once or on a schedule."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

import click

from rulesd.cli.context import CliContext
from rulesd.config import Settings
from rulesd.db import migrate
from rulesd.errors import DatabaseError, SyncError
from rulesd.servicetitan.catalog import ENTITY_LIST

logger = logging.getLogger(__name__)

pass_context = click.make_pass_decorator(CliContext)

SUMMARY_WIDTH = 160  # characters, for the summary table when output is piped

# rulesd.servicetitan.catalog imports only dataclasses and typing, so listing
# its names here keeps loading this command cheap. The HTTP client, rich and
# the orchestrator are imported when a sync runs.
ENTITY_NAMES = sorted(entity.name for entity in ENTITY_LIST)


@click.command()
@click.option("--initial", is_flag=True, help="Load every record, firing no change events.")
@click.option(
    "--full",
    is_flag=True,
    help="Re-read every record, firing no change events, and mark rows ServiceTitan no longer returns as missing.",
)
@click.option(
    "--entity",
    "entities",
    multiple=True,
    type=click.Choice(ENTITY_NAMES),
    metavar="NAME",
    help=f"Sync only this catalog entity (repeatable): {', '.join(ENTITY_NAMES)}. Default: every entity.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on standard output.")
@click.option(
    "--schedule",
    is_flag=True,
    help="Run incremental and full syncs on the configured schedule until interrupted.",
)
@click.option("--no-migrate", is_flag=True, help="Do not apply pending database migrations first.")
@pass_context
def sync(
    context: CliContext,
    initial: bool,
    full: bool,
    entities: tuple[str, ...],
    as_json: bool,
    schedule: bool,
    no_migrate: bool,
) -> None:
    """Sync the ServiceTitan tenant into the Postgres mirror.

    Without --initial or --full, run an incremental sync from each entity's
    saved position. An entity never synced gets an initial load, and an
    interrupted initial or full load is finished first. Exits with status 5
    when any entity failed.
    """
    if initial and full:
        raise click.UsageError("--initial and --full are mutually exclusive, so pass only one of them")
    kind: str | None = None
    if initial:
        kind = "initial"
    elif full:
        kind = "full"
    if schedule and (kind or entities):
        raise click.UsageError("--schedule syncs every entity on the configured schedule; drop --initial, --full and --entity")
    if schedule and as_json:
        raise click.UsageError(
            "--schedule and --json are mutually exclusive because a scheduled sync prints no summary."
            " For JSON log lines, run rulesd --log-format json sync --schedule"
        )
    from rulesd.servicetitan.client import check_credentials

    settings = context.settings
    # Missing credentials are reported before the database is started or migrated.
    check_credentials(settings.servicetitan)
    url = context.database_url_or_start()
    if no_migrate:
        _check_schema_current(url)
    else:
        for name in migrate.upgrade(url):
            logger.info("applied migration %s", name, extra={"event": "migration_applied"})

    if schedule:
        _run_schedule(settings, url)
        return

    from rich.console import Console

    from rulesd.sync.orchestrator import run_sync
    from rulesd.sync.progress import make_progress, summary_table

    progress = make_progress(terminal=sys.stderr.isatty())
    try:
        report = asyncio.run(run_sync(settings, url, kind=kind or "incremental", entities=entities, progress=progress))
    finally:
        progress.close()

    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        # Rich squeezes a table into 80 columns when output is not a terminal.
        width = None if sys.stdout.isatty() else SUMMARY_WIDTH
        Console(width=width).print(summary_table(report))
    if not report.succeeded:
        reasons = "; ".join(f"{r.entity}: {r.error}" for r in report.failed)
        raise SyncError(
            f"{len(report.failed)} of {len(report.results)} entities failed: {reasons}",
            hint="fix the cause and run rulesd sync again; it resumes where each entity stopped",
        )


def _check_schema_current(url: str) -> None:
    """Raise ``DatabaseError`` when a migration is pending, before a sync fails on a missing table."""
    pending = migrate.pending(url)
    if not pending:
        return
    noun = "migration" if len(pending) == 1 else "migrations"
    raise DatabaseError(
        f"the database schema is not up to date: {len(pending)} {noun} pending, starting with {pending[0]}",
        hint="run `rulesd db upgrade`, or drop --no-migrate",
    )


def _run_schedule(settings: Settings, url: str) -> None:
    from rulesd.sync.scheduler import run_scheduler

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_scheduler(settings, url, stop_event=stop)

    click.echo("running syncs on schedule; press Ctrl-C to stop", err=True)
    asyncio.run(main())
