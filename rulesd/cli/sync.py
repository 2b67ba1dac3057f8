"""``rulesd sync``: load, refresh or reconcile the Postgres mirror, once or on a schedule."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from rulesd.cli.context import CliContext
from rulesd.config import Settings
from rulesd.db import migrate
from rulesd.errors import DatabaseError, SyncError
from rulesd.servicetitan.catalog import ENTITY_LIST

if TYPE_CHECKING:
    from rulesd.sync.report import SyncReport

logger = logging.getLogger(__name__)

T = TypeVar("T")

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
    kind = _requested_kind(initial, full, entities, as_json, schedule)
    if schedule:
        url = _prepare_database(context, no_migrate)
        _run_schedule(context.settings, url)
        return

    stop = SignalStop()
    with stop.installed():
        try:
            url = _prepare_database(context, no_migrate)
            report = _run_once(context.settings, url, kind, entities, stop)
        except BaseException:
            if stop.received is None:
                raise
            # The stop surfaces as KeyboardInterrupt, as the cancellation, or
            # as an error from a connection that it cut short.
            logger.debug("sync stopped by %s", stop.received.name, exc_info=True)
            _exit_interrupted(stop.received)
    _print_report(report, as_json)


def _requested_kind(initial: bool, full: bool, entities: tuple[str, ...], as_json: bool, schedule: bool) -> str:
    """Return the sync kind the flags request; raise ``click.UsageError`` for flags that conflict."""
    if initial and full:
        raise click.UsageError("--initial and --full are mutually exclusive, so pass only one of them")
    if schedule and (initial or full or entities):
        raise click.UsageError("--schedule syncs every entity on the configured schedule; drop --initial, --full and --entity")
    if schedule and as_json:
        raise click.UsageError(
            "--schedule and --json are mutually exclusive because a scheduled sync prints no summary."
            " For JSON log lines, run rulesd --log-format json sync --schedule"
        )
    if initial:
        return "initial"
    if full:
        return "full"
    return "incremental"


def _prepare_database(context: CliContext, no_migrate: bool) -> str:
    """Check the credentials, start the database if needed, and migrate or check its schema. Return its URL."""
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
    return url


def _run_once(settings: Settings, url: str, kind: str, entities: tuple[str, ...], stop: SignalStop) -> SyncReport:
    from rulesd.sync.orchestrator import run_sync
    from rulesd.sync.progress import make_progress

    progress = make_progress(terminal=sys.stderr.isatty())
    try:
        if kind == "full":
            # A full read writes no events, so changes made since the last
            # incremental sync would arrive without theirs. Read them first,
            # as the scheduler does before each full sync.
            quiet = make_progress(terminal=False, quiet=True)
            asyncio.run(stop.run(run_sync(settings, url, kind="incremental", entities=entities, progress=quiet)))
        return asyncio.run(stop.run(run_sync(settings, url, kind=kind, entities=entities, progress=progress)))
    finally:
        progress.close()


def _print_report(report: SyncReport, as_json: bool) -> None:
    """Print the summary, then raise ``SyncError`` when any entity failed."""
    from rich.console import Console

    from rulesd.sync.progress import summary_table

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


def _exit_interrupted(signum: signal.Signals) -> NoReturn:
    # Every batch commits with its entity's checkpoint, and the next run starts
    # by marking the log rows this run left running as interrupted
    # (rulesd.sync.state.fail_interrupted_runs).
    click.echo(
        f"sync interrupted by {signum.name}; run `rulesd sync` to resume where it stopped"
        " (that run also closes the st_sync_log rows this one left running)",
        err=True,
    )
    sys.exit(128 + signum)


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


class SignalStop:
    """Signal handlers that turn SIGINT and SIGTERM into a clean stop of a one-shot sync.

    While ``run`` awaits the sync, the first signal cancels its task, so
    every connection closes and the sync lock is released on the way out.
    A second signal, or one outside ``run``, raises ``KeyboardInterrupt``.
    ``received`` is the first signal caught. A signal that the parent
    process set to be ignored stays ignored, as SIGINT is for a background
    job of a non-interactive shell.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._task: asyncio.Task[Any] | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous: dict[signal.Signals, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, self._handle)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` in the current task, which the first signal cancels."""
        self._task = asyncio.current_task()
        try:
            return await coroutine
        finally:
            self._task = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signal.Signals(signum)
        task = self._task
        if first and task is not None and not task.done():
            # asyncio.Runner's own SIGINT handler (Python 3.11) cancels its main task the same way.
            task.cancel()
            task.get_loop().call_soon_threadsafe(lambda: None)  # wake the loop's selector
            return
        raise KeyboardInterrupt
