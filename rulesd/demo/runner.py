"""The demo's orchestration: database, simulator, initial sync, then the daemon, the sync loop, the story and the view.

Everything runs in one process: the simulator serves HTTP on 127.0.0.1
from a background thread, and the daemon, the incremental sync loop, the
story and the view share one event loop. Ctrl-C, SIGTERM or
``--exit-after`` stop them in reverse order: the view and the story, the
sync loop, the daemon (which releases its leases), the simulator, and the
embedded Postgres when the demo started it.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import psycopg
from rich.console import Console

from rulesd.config import Settings
from rulesd.daemon import Daemon, DaemonOptions
from rulesd.demo.activity import DemoActivity
from rulesd.demo.database import open_demo_database, record_events_in_demo_time, reset_database
from rulesd.demo.feed import Feed, Totals, count_totals, local_time
from rulesd.demo.settings import BUSINESS_TIMEZONE, demo_settings, demo_start
from rulesd.demo.story import Story
from rulesd.db.server import DatabaseServer
from rulesd.demo.view import Line, Screen, describe, describe_sync, make_screen
from rulesd.engine.clock import ScaledClock
from rulesd.engine.ruleset import load_rule_set
from rulesd.engine.executor import RecordingExecutor, StepExecutor
from rulesd.errors import RulesdError
from rulesd.servicetitan.simulator import Simulator, serve_simulator
from rulesd.sync.orchestrator import run_sync
from rulesd.sync.progress import make_progress

logger = logging.getLogger(__name__)

FEED_INTERVAL = 0.5  # real seconds between reads of the demo's tables
READY_TIMEOUT = 60.0  # real seconds the daemon may take to load its rules and start
NO_MODEL_BANNER = (
    "ANTHROPIC_API_KEY is not set, so Claude is not called: each step shows the action it would send "
    "to the model. Nothing is sent to a phone or inbox."
)
MODEL_BANNER = (
    "Claude drafts each message (ANTHROPIC_API_KEY is set). This is a dry run: drafts are recorded "
    "and nothing is sent to a phone or inbox."
)


@dataclass(frozen=True)
class DemoOptions:
    """Options of one ``rulesd demo`` run."""

    rules_dir: Path
    database_url: str | None = None  # None: the embedded Postgres in data_dir
    data_dir: Path = Path(".rulesd/demo-pgdata")
    speed: float = 2880.0
    exit_after: float | None = None  # real seconds from the start of the command
    sync_interval: float = 3.0  # real seconds between incremental syncs
    customers: int = 200
    activity: float = 30.0  # random simulator changes per real minute
    seed: int = 1
    log_file: Path = Path(".rulesd/demo.log")


def run_demo(options: DemoOptions) -> Totals | None:
    """Run the demo until interrupted or ``exit_after``; return the final totals.

    Return None when Ctrl-C arrives during the database set-up or the
    initial sync, before the daemon starts. The demo then stops what it
    started and returns normally.
    """
    deadline = None if options.exit_after is None else time.monotonic() + options.exit_after
    console = Console(stderr=True)
    _configure_logging(options.log_file)
    console.print(f"[bold]rulesd demo[/bold]: detailed log in {options.log_file}")

    # Check the rules first, so a rule error shows before the database and the initial sync start.
    load_rule_set([options.rules_dir])

    server: DatabaseServer | None = None
    try:
        server = open_demo_database(options.database_url, options.data_dir)
        console.print("emptying the demo database and applying migrations…")
        reset_database(server.url)
        # The demo runs its own activity, started once the daemon is ready.
        sim = Simulator(seed=options.seed, customers=options.customers, activity=0.0)
        console.print(f"simulated tenant: {sum(sim.counts().values()):,} records, {options.customers} customers")
        with serve_simulator(sim, timeout=None) as simulator:
            settings = demo_settings(server.url, simulator, options.rules_dir, options.speed)
            return anyio.run(_Demo(options, settings, sim, deadline).run, backend="asyncio")
    except KeyboardInterrupt:
        # Once the daemon runs, the demo's own signal handler takes Ctrl-C.
        logger.info("interrupted before the daemon started", extra={"event": "demo_interrupted"})
        return None
    finally:
        if server is not None:
            server.close()


def _configure_logging(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    to_file = logging.FileHandler(log_file, mode="w", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(to_file)
    root.setLevel(logging.INFO)


class _Demo:
    """One run of the demo inside the event loop."""

    def __init__(self, options: DemoOptions, settings: Settings, sim: Simulator, deadline: float | None) -> None:
        self.options = options
        self.deadline = deadline  # time.monotonic() at which --exit-after ends the demo
        self.settings = settings
        self.sim = sim
        self.activity = DemoActivity(sim, options.activity)
        self.url = settings.database.url or ""
        self.zone = ZoneInfo(BUSINESS_TIMEZONE)
        self.clock: ScaledClock | None = None
        self.screen: Screen = make_screen(self.zone, options.speed)
        self.feed = Feed()
        self.changes = 0
        self.stop = anyio.Event()

    async def run(self) -> Totals:
        await self._initial_sync()
        executor, banner = self._executor()
        self.clock = ScaledClock(demo_start(datetime.now(timezone.utc)), self.options.speed)
        await anyio.to_thread.run_sync(record_events_in_demo_time, self.url, self.clock)
        daemon = Daemon(
            self.settings,
            self.url,
            DaemonOptions(
                rules_paths=[self.options.rules_dir], dry_run=True, sync=False,
                executor=executor, clock=self.clock, handle_signals=False,
            ),
        )
        self.screen.start(banner)
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._run_daemon, daemon)
                async with anyio.create_task_group() as helpers:
                    helpers.start_soon(self._watch_signals)
                    helpers.start_soon(self._start_helpers, daemon, helpers)
                    remaining = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
                    with anyio.move_on_after(remaining):
                        await self.stop.wait()
                    helpers.cancel_scope.cancel()
                daemon.stop()
            await anyio.to_thread.run_sync(self._poll_once)
        except BaseExceptionGroup as group:
            # The CLI reports a RulesdError (a rule that fails to load, a
            # database that went away) as one line; a task group wraps it.
            raise _first_rulesd_error(group) or group
        finally:
            self.activity.stop()
            self.screen.stop()
            close = getattr(executor, "aclose", None)
            if close is not None:
                await close()
        return await anyio.to_thread.run_sync(self._totals)

    async def _initial_sync(self) -> None:
        progress = make_progress(terminal=sys.stderr.isatty())
        try:
            report = await run_sync(self.settings, self.url, kind="initial", progress=progress)
        finally:
            progress.close()
        if not report.succeeded:
            reasons = "; ".join(f"{result.entity}: {result.error}" for result in report.failed)
            raise RulesdError(f"the demo's initial sync failed: {reasons}", hint=f"read {self.options.log_file}")
        totals = report.totals
        print(f"initial sync: {totals.received:,} records in {report.seconds:.1f} s (no rule fires on history)",
              file=sys.stderr, flush=True)

    def _executor(self) -> tuple[StepExecutor, str]:
        if not self.settings.agent.api_key:
            return RecordingExecutor(), NO_MODEL_BANNER
        from rulesd.agent import build_executor

        return build_executor(self.settings, self.url, dry_run=True), MODEL_BANNER

    async def _run_daemon(self, daemon: Daemon) -> None:
        try:
            await daemon.run()
        finally:
            self.stop.set()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info("%s received; stopping the demo", signal.Signals(signum).name,
                            extra={"event": "demo_signal"})
                self.stop.set()
                return

    async def _start_helpers(self, daemon: Daemon, helpers: anyio.abc.TaskGroup) -> None:
        with anyio.fail_after(READY_TIMEOUT):
            while daemon.ready is None or not daemon.ready.is_set():
                await anyio.sleep(0.05)
        assert self.clock is not None
        self._show("story", self._time_note())
        story = Story(
            self.sim, self.activity, self.clock, self.url, BUSINESS_TIMEZONE, lambda text: self._show("story", text)
        )
        self.activity.start()
        helpers.start_soon(self._sync_loop)
        helpers.start_soon(story.run)
        helpers.start_soon(self._feed_loop)

    def _time_note(self) -> str:
        assert self.clock is not None
        return (
            f"demo time starts {local_time(self.clock.start, self.zone)} {self.zone.key} and runs "
            f"{self.options.speed:,.0f}x faster than real time"
        )

    async def _sync_loop(self) -> None:
        while True:
            await anyio.sleep(self.options.sync_interval)
            try:
                # Shielded so a stop never cuts a request to the simulator or a write in half.
                with anyio.CancelScope(shield=True):
                    report = await run_sync(self.settings, self.url, kind="incremental")
            except RulesdError as exc:
                self._show("warning", f"incremental sync failed: {exc.message}")
                continue
            self.changes += report.totals.created + report.totals.updated
            text = describe_sync(report)
            if text:
                self._show("sync", text)
            for result in report.failed:
                self._show("warning", f"sync of {result.entity} failed: {result.error}")

    async def _feed_loop(self) -> None:
        while True:
            totals = await anyio.to_thread.run_sync(self._poll_once)
            assert self.clock is not None
            self.screen.update(self.clock.now(), totals, self.changes)
            await anyio.sleep(FEED_INTERVAL)

    def _poll_once(self) -> Totals:
        show_actions = not self.settings.agent.api_key
        with psycopg.connect(self.url, autocommit=True) as conn:
            for item in self.feed.poll(conn):
                for category, text in describe(item, self.zone, show_actions):
                    self._show(category, text, at=item.at)
            return count_totals(conn)

    def _totals(self) -> Totals:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return count_totals(conn)

    def _show(self, category: str, text: str, at: datetime | None = None) -> None:
        if at is None and self.clock is not None:
            at = self.clock.now()
        self.screen.show(Line(local_time(at, self.zone), category, text))
        level = logging.WARNING if category == "warning" else logging.INFO
        logger.log(level, "demo %s: %s", category, text, extra={"event": "demo_line", "category": category})


def _first_rulesd_error(group: BaseExceptionGroup) -> RulesdError | None:
    for exc in group.exceptions:
        if isinstance(exc, RulesdError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_rulesd_error(exc)
            if found is not None:
                return found
    return None


def describe_totals(totals: Totals) -> str:
    """Return the closing summary line."""
    return (
        f"demo finished: {totals.enrolled} enrolled, {totals.steps_run} step(s) run, {totals.deferred} deferred, "
        f"{totals.stopped} stopped, {totals.completed} completed, {totals.drafted} draft(s); nothing was sent"
    )

