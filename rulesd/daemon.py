"""The ``rulesd run`` daemon: the listener, both engines, the rule watcher and the sync scheduler in one task group.

SIGINT and SIGTERM stop claiming, let running steps finish for up to
``engine.shutdown_timeout``, release the leases still held and return.
SIGHUP reloads the rules. Several daemons may share one database: steps
are claimed with ``FOR UPDATE SKIP LOCKED`` and leases, and the sync
scheduler holds an advisory lock so only one of them syncs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from rulesd.config import Settings
from rulesd.engine import store
from rulesd.engine.clock import Clock, SystemClock
from rulesd.engine.execution import ExecutionEngine
from rulesd.engine.executor import RecordingExecutor, StepExecutor
from rulesd.engine.listener import Listener
from rulesd.engine.metrics import serve_metrics
from rulesd.engine.triggers import TriggerEngine
from rulesd.engine.wakeup import Wakeup
from rulesd.engine.watcher import RuleHolder, watch_rules
from rulesd.errors import DatabaseError, RulesdError

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 10.0  # seconds between updates of this daemon's workflow_daemons row
ERROR_BACKOFF = 2.0  # seconds an engine loop waits after a database error
MIN_WAIT = 0.05  # seconds; the shortest sleep of the execution loop between claims


@dataclass
class DaemonOptions:
    """Options of one ``rulesd run``."""

    rules_paths: Sequence[Path]
    dry_run: bool = False
    sync: bool = True
    metrics_port: int | None = None
    executor: StepExecutor | None = None  # tests inject one; None builds the configured executor
    clock: Clock = field(default_factory=SystemClock)
    handle_signals: bool = True  # only possible in the main thread


class Daemon:
    """One daemon process: its lease owner id, its engines and their loops."""

    def __init__(self, settings: Settings, database_url: str, options: DaemonOptions) -> None:
        self.settings = settings
        self.database_url = database_url
        self.options = options
        self.clock = options.clock
        self.owner = uuid.uuid4()  # unique per process start: the lease owner
        self.pool: AsyncConnectionPool[Any] | None = None
        self.rules: RuleHolder | None = None
        self.triggers: TriggerEngine | None = None
        self.execution: ExecutionEngine | None = None
        self.listener: Listener | None = None
        self.stopping = False
        self._stop_event: anyio.Event | None = None
        self._event_wake: Wakeup | None = None
        self._step_wake: Wakeup | None = None
        self.ready: anyio.Event | None = None

    # --- lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``stop`` is called or SIGINT/SIGTERM arrives."""
        self._stop_event = anyio.Event()
        self.ready = anyio.Event()
        self._event_wake = Wakeup()
        self._step_wake = Wakeup()
        engine = self.settings.engine
        self.pool = AsyncConnectionPool(
            self.database_url,
            min_size=1,
            max_size=max(4, self.settings.database.pool_size),
            open=False,
            check=AsyncConnectionPool.check_connection,
            kwargs={"connect_timeout": 10},
        )
        try:
            await self.pool.open(wait=True, timeout=30)
        except psycopg.OperationalError as exc:
            await self.pool.close()
            raise DatabaseError(
                f"cannot connect to Postgres within 30 s: {exc}",
                hint="start the Postgres server or fix the database URL, then run rulesd run again",
            ) from exc
        built: StepExecutor | None = None
        try:
            self.rules = RuleHolder(self.options.rules_paths, self.pool, self.clock)
            await self.rules.reload(initial=True)
            if self.options.executor is None:
                built = build_executor(self.settings, self.database_url, self.options.dry_run)
            executor = self.options.executor or built
            assert executor is not None
            self.triggers = TriggerEngine(self.pool, self.rules.get, self.clock, engine)
            self.execution = ExecutionEngine(
                self.pool, self.rules.get, self.clock, engine, executor,
                owner=self.owner, database_url=self.database_url, dry_run=self.options.dry_run,
                timezone=self.settings.business.timezone,
            )
            self.listener = Listener(
                self.database_url, self._event_wake, poll_interval=engine.poll_interval.total_seconds(),
            )
            await self._register()
            await self._run_tasks()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()
                if built is not None:
                    await _close_executor(built)
                await self.pool.close()

    def stop(self) -> None:
        """Stop claiming new work and begin the shutdown."""
        if not self.stopping:
            self.stopping = True
            logger.info("stopping: no new steps will be claimed", extra={"event": "daemon_stopping"})
        if self._stop_event is not None:
            self._stop_event.set()
        if self._step_wake is not None:
            self._step_wake.set()

    async def _run_tasks(self) -> None:
        assert self.listener is not None and self.rules is not None
        metrics_server = None
        if self.options.metrics_port is not None:
            listener = self.listener
            metrics_server = serve_metrics(self.options.metrics_port, lambda: listener.state == "listening")
        try:
            async with anyio.create_task_group() as group:
                if self.options.handle_signals:
                    group.start_soon(self._handle_signals)
                group.start_soon(self.listener.run)
                group.start_soon(self._guarded, "trigger engine", self._trigger_loop)
                group.start_soon(self._guarded, "rule watcher", lambda: watch_rules(self.rules))  # type: ignore[arg-type]
                group.start_soon(self._guarded, "heartbeat", self._heartbeat_loop)
                if self.options.sync:
                    scheduler = find_sync_scheduler()
                    group.start_soon(self._guarded, "sync scheduler", lambda: self._run_scheduler(scheduler))
                logger.info(
                    "rulesd daemon %s started with %s rule(s)%s",
                    self.owner, len(self.rules.current.rules), " in dry-run mode" if self.options.dry_run else "",
                    extra={"event": "daemon_started", "owner": str(self.owner)},
                )
                assert self.ready is not None
                self.ready.set()
                await self._execution_loop()
                group.cancel_scope.cancel()
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()

    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    logger.info("SIGHUP received; reloading rules", extra={"event": "rules_sighup"})
                    assert self.rules is not None
                    try:
                        await self.rules.reload()
                    except psycopg.Error as exc:
                        logger.error("reloading rules failed: %s", exc, extra={"event": "rule_reload_failed"})
                else:
                    logger.info("%s received", signal.Signals(signum).name, extra={"event": "daemon_signal"})
                    self.stop()

    async def _guarded(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        # A database outage must not end the daemon: log, wait, start the loop again.
        while True:
            try:
                await loop()
                return
            except (psycopg.Error, OSError) as exc:
                logger.warning(
                    "%s hit a database error and restarts in %.0f s: %s", name, ERROR_BACKOFF, exc,
                    extra={"event": "loop_error", "loop": name},
                )
                await anyio.sleep(ERROR_BACKOFF)

    # --- loops ----------------------------------------------------------------

    async def _trigger_loop(self) -> None:
        assert self.triggers is not None
        assert self._event_wake is not None
        assert self._step_wake is not None
        poll = self.settings.engine.poll_interval.total_seconds()
        while True:
            await self._event_wake.wait(poll)
            result = await self.triggers.drain()
            if result.enrolled or result.stopped:
                self._step_wake.set()

    async def _execution_loop(self) -> None:
        assert self.execution is not None and self._step_wake is not None
        engine = self.settings.engine
        tick = engine.tick.total_seconds()
        step_wake = self._step_wake
        async with anyio.create_task_group() as steps:
            while not self.stopping:
                try:
                    free = engine.max_concurrent_steps - self.execution.running
                    claims = await self.execution.claim(free) if free > 0 else []
                    for claim in claims:
                        steps.start_soon(self._run_claim, claim)
                    next_due = await self.execution.next_due_at()
                except (psycopg.Error, OSError) as exc:
                    logger.warning(
                        "execution engine hit a database error and retries in %.0f s: %s", ERROR_BACKOFF, exc,
                        extra={"event": "loop_error", "loop": "execution engine"},
                    )
                    await anyio.sleep(ERROR_BACKOFF)
                    continue
                if claims and len(claims) == free:
                    continue  # there may be more due work
                timeout = tick
                if next_due is not None and free > 0:
                    until = self.clock.seconds_until(next_due)
                    if until is not None:
                        # The floor keeps a due row that another daemon is
                        # claiming right now from turning this into a busy loop.
                        timeout = min(tick, max(MIN_WAIT, until))
                # With every slot busy, a finishing step sets step_wake.
                await step_wake.wait(timeout, self.clock)
            await self._drain_steps(steps)

    async def _run_claim(self, claim: store.Claim) -> None:
        assert self.execution is not None and self._step_wake is not None
        try:
            await self.execution.run_claim(claim)
        except* (psycopg.Error, OSError) as group:
            # run_claim runs a task group, so errors arrive as an ExceptionGroup.
            # The lease expires and another round runs the step again.
            logger.warning(
                "step of enrollment %s hit a database error; it runs again when the lease expires: %s",
                claim.instance_id, group.exceptions[0],
                extra={"event": "step_db_error", "instance_id": claim.instance_id},
            )
        finally:
            self._step_wake.set()

    async def _drain_steps(self, steps: anyio.abc.TaskGroup) -> None:
        assert self.execution is not None
        timeout = self.settings.engine.shutdown_timeout.total_seconds()
        if self.execution.running:
            logger.info(
                "waiting up to %.0f s for %s running step(s) to finish", timeout, self.execution.running,
                extra={"event": "daemon_draining"},
            )
        with anyio.move_on_after(timeout):
            while self.execution.running:
                await anyio.sleep(0.05)
        if self.execution.running:
            logger.warning(
                "%s step(s) did not finish within %.0f s; cancelling them and releasing their leases",
                self.execution.running, timeout, extra={"event": "daemon_cancel_steps"},
            )
        steps.cancel_scope.cancel()

    async def _heartbeat_loop(self) -> None:
        # The first beat comes soon after start, so `rulesd status` shows the
        # listener's state without waiting a whole interval.
        await anyio.sleep(1.0)
        while True:
            await self._heartbeat()
            await anyio.sleep(HEARTBEAT_INTERVAL)

    async def _run_scheduler(self, scheduler: Callable[..., Awaitable[None]]) -> None:
        assert self._stop_event is not None
        try:
            await scheduler(self.settings, self.database_url, clock=self.clock, stop_event=self._stop_event)
        except RulesdError as exc:
            # Without sync the mirror goes stale, but enrollments and due
            # steps still need the engine, so the daemon keeps running.
            logger.error(
                "the sync scheduler stopped: %s; the engine keeps running without sync. %s",
                exc.message, exc.hint or "Fix the problem and restart rulesd run.",
                extra={"event": "sync_scheduler_failed"},
            )

    # --- bookkeeping ----------------------------------------------------------

    async def _register(self) -> None:
        assert self.pool is not None and self.rules is not None
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO workflow_daemons (owner, hostname, pid, rules_loaded) VALUES (%s, %s, %s, %s)",
                (self.owner, socket.gethostname(), os.getpid(), len(self.rules.current.rules)),
            )

    async def _heartbeat(self) -> None:
        assert self.pool is not None
        assert self.listener is not None
        assert self.rules is not None
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                UPDATE workflow_daemons
                   SET heartbeat_at = now(), rules_loaded = %s,
                       listener_changed_at = CASE WHEN listener_state = %s THEN listener_changed_at ELSE now() END,
                       listener_state = %s
                 WHERE owner = %s
                """,
                (len(self.rules.current.rules), self.listener.state, self.listener.state, self.owner),
            )

    async def _release(self) -> None:
        assert self.pool is not None
        try:
            async with self.pool.connection(timeout=10) as conn:
                released = await store.release_leases(conn, self.owner, self.clock.sql_now())
                await conn.execute(
                    "UPDATE workflow_daemons SET stopped_at = now(), listener_state = 'stopped' WHERE owner = %s",
                    (self.owner,),
                )
        except Exception as exc:  # noqa: BLE001 - leases expire by themselves; the exit must go on
            logger.warning(
                "could not release leases on exit (they expire by themselves): %s", exc,
                extra={"event": "lease_release_failed"},
            )
            return
        logger.info(
            "daemon %s stopped; released %s lease(s)", self.owner, released,
            extra={"event": "daemon_stopped", "released": released},
        )


EXECUTOR_CLOSE_TIMEOUT = 10.0


async def _close_executor(executor: StepExecutor) -> None:
    """Await the executor's ``aclose()`` when it has one (the Claude executor closes its HTTP clients there).

    Only the executor the daemon built is closed; one a caller passed in
    belongs to that caller. A failure is logged and does not stop the shutdown.
    """
    close = getattr(executor, "aclose", None)
    if close is None:
        return
    try:
        with anyio.fail_after(EXECUTOR_CLOSE_TIMEOUT):
            await close()
    except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever the executor does
        logger.warning(
            "closing the step executor failed: %s", exc,
            extra={"event": "executor_close_failed"},
        )


def build_executor(settings: Settings, database_url: str, dry_run: bool) -> StepExecutor:
    """Return the Claude executor, or the recording executor when no Anthropic API key is set.

    Without a key no model can draft a message, so nothing can be sent: the
    daemon still enrolls, runs and stops workflows, and each step records
    the action text it would have given the model.
    """
    if not settings.agent.api_key:
        logger.warning(
            "ANTHROPIC_API_KEY is not set: steps record their action text, no model is called and nothing is sent",
            extra={"event": "recording_executor"},
        )
        return RecordingExecutor()
    from rulesd.agent import build_executor as build_agent_executor

    executor: StepExecutor = build_agent_executor(settings, database_url, dry_run=dry_run)
    return executor


def find_sync_scheduler() -> Callable[..., Awaitable[None]]:
    """Return the sync scheduler's entry point."""
    from rulesd.sync.scheduler import run_scheduler

    return run_scheduler
