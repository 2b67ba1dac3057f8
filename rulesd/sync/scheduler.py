"""The sync scheduler: an incremental sync every interval, a full sync on a cron schedule.

Last runs live in ``st_sync_schedule``, so a restarted process neither
repeats a run already done nor skips one that fell due while it was down
(missed full-sync slots collapse into one run). A process runs syncs only
while it holds the sync advisory lock, so several daemons can share one
database and whichever takes the lock does the work.

The cron expression is evaluated in the business time zone. On the night
clocks go forward a slot inside the skipped hour runs at the first minute
after it, and on the night they go back a slot inside the repeated hour
runs once, not twice.

A full sync suppresses change events, so every full sync is preceded by an
incremental one: changes made since the last incremental sync then fire
their events before the full read takes them in silently.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from croniter import croniter

from rulesd.config import Settings
from rulesd.db.connect import async_connect
from rulesd.errors import ConfigError, RulesdError
from rulesd.logs import log_context
from rulesd.sync.lock import SyncLock
from rulesd.sync.report import SyncReport
from rulesd.sync.state import SyncKind

logger = logging.getLogger(__name__)

TICK = 60.0  # seconds, the longest sleep between two looks at the schedule
MIN_SLEEP = 1.0  # seconds, the shortest sleep on the system clock

SyncRunner = Callable[[SyncKind, uuid.UUID], Awaitable[SyncReport]]


class SchedulerClock(Protocol):
    """The scheduler's source of time; ``rulesd.engine.clock`` clocks fit it."""

    def now(self) -> datetime: ...

    def seconds_until(self, when: datetime) -> float | None: ...

    def subscribe(self, event: anyio.Event) -> None: ...


class StopEvent(Protocol):
    """An ``asyncio.Event`` or ``anyio.Event`` that ends the scheduler when set."""

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def seconds_until(self, when: datetime) -> float | None:
        return max(0.0, (when - self.now()).total_seconds())

    def subscribe(self, event: anyio.Event) -> None:
        return None


@dataclass(frozen=True)
class Schedule:
    """When syncs are due: ``interval`` between incremental syncs, ``cron`` for full ones in ``zone``."""

    interval: timedelta
    cron: str
    zone: ZoneInfo

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedule:
        """Build the schedule from settings; raise ``ConfigError`` for a bad cron or time zone."""
        cron = settings.sync.full_schedule
        if not croniter.is_valid(cron):
            raise ConfigError(
                f"sync.full_schedule: invalid cron expression {cron!r}",
                hint="use five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *'",
            )
        try:
            zone = ZoneInfo(settings.business.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"business.timezone: unknown time zone {settings.business.timezone!r}",
                hint="use an IANA name such as America/Chicago",
            ) from exc
        if settings.sync.incremental_interval <= timedelta(0):
            raise ConfigError("sync.incremental_interval must be longer than zero")
        return cls(settings.sync.incremental_interval, cron, zone)

    def next_full_slot(self, after: datetime) -> datetime:
        """Return the first full-sync slot strictly after ``after``, in UTC."""
        local_after = after.astimezone(self.zone)
        slots = croniter(self.cron, local_after)
        while True:
            slot: datetime = slots.get_next(datetime)
            slot_utc = slot.astimezone(timezone.utc)
            if slot_utc <= after:
                continue
            # croniter yields a wall-clock time twice on the night clocks go
            # back (01:30 CDT, then 01:30 CST), so the second one is skipped.
            if slot.replace(tzinfo=None) == local_after.replace(tzinfo=None):
                continue
            return slot_utc

    def latest_full_slot(self, last: datetime, now: datetime) -> datetime | None:
        """Return the latest slot after ``last`` and at or before ``now``, or None when none is due."""
        slot = self.next_full_slot(last)
        if slot > now:
            return None
        while True:
            following = self.next_full_slot(slot)
            if following > now:
                return slot
            slot = following


@dataclass(frozen=True)
class ScheduleRow:
    """One kind's last run as stored in ``st_sync_schedule``."""

    kind: str
    last_slot_at: datetime | None
    last_status: str | None


class Scheduler:
    """Runs the syncs that are due; ``run_due`` does one round, ``run`` loops until stopped."""

    def __init__(
        self,
        database_url: str,
        schedule: Schedule,
        runner: SyncRunner,
        clock: SchedulerClock | None = None,
    ) -> None:
        self.database_url = database_url
        self.schedule = schedule
        self.runner = runner
        self.clock = clock or SystemClock()

    async def run(self, stop_event: StopEvent) -> None:
        """Run due syncs until ``stop_event`` is set."""
        logger.info(
            "sync scheduler started: incremental every %s, full on '%s' (%s)",
            self.schedule.interval,
            self.schedule.cron,
            self.schedule.zone.key,
            extra={"event": "sync_scheduler_started"},
        )
        while not stop_event.is_set():
            # Subscribe before looking at the time, so a clock jump during
            # this round wakes the next wait instead of being missed.
            wake = anyio.Event()
            self.clock.subscribe(wake)
            await self.run_due()
            if stop_event.is_set():
                break
            await self._sleep_until(await self.next_due(), stop_event, wake)
        logger.info("sync scheduler stopped", extra={"event": "sync_scheduler_stopped"})

    async def run_due(self) -> list[SyncKind]:
        """Run every sync that is due now, if this process gets the sync lock; return the kinds run."""
        async with SyncLock(self.database_url) as lock:
            if not lock.acquired:
                logger.debug("sync lock busy: another process is syncing, skipping this round", extra={"event": "sync_lock_busy"})
                return []
            rows = await self._load()
            now = self.clock.now()
            kinds = self._due_kinds(rows, now)
            if "full" not in rows:
                # First start: anchor the cron schedule here instead of running
                # a full sync at once; an initial load is a separate command.
                await self._store_slot("full", now)
            for kind in kinds:
                await self._run_one(kind, rows, now)
            return kinds

    def _due_kinds(self, rows: dict[str, ScheduleRow], now: datetime) -> list[SyncKind]:
        incremental_due = self._incremental_due(rows.get("incremental"), now)
        full_slot = self._full_slot(rows.get("full"), now)
        if full_slot is not None:
            return ["incremental", "full"]
        return ["incremental"] if incremental_due else []

    def _incremental_due(self, row: ScheduleRow | None, now: datetime) -> bool:
        if row is None or row.last_slot_at is None:
            return True
        return now >= row.last_slot_at + self.schedule.interval

    def _full_slot(self, row: ScheduleRow | None, now: datetime) -> datetime | None:
        if row is None or row.last_slot_at is None:
            return None
        return self.schedule.latest_full_slot(row.last_slot_at, now)

    async def next_due(self) -> datetime:
        """Return when the next sync falls due, from the stored last runs."""
        rows = await self._load()
        now = self.clock.now()
        incremental = rows.get("incremental")
        due = now if incremental is None or incremental.last_slot_at is None else incremental.last_slot_at + self.schedule.interval
        full = rows.get("full")
        if full is not None and full.last_slot_at is not None:
            due = min(due, self.schedule.next_full_slot(full.last_slot_at))
        return due

    async def _run_one(self, kind: SyncKind, rows: dict[str, ScheduleRow], now: datetime) -> None:
        slot = now
        if kind == "full":
            full = rows["full"]
            assert full.last_slot_at is not None
            slot = self.schedule.latest_full_slot(full.last_slot_at, now) or now
        run_id = uuid.uuid4()
        with log_context(sync_run_id=str(run_id)):
            logger.info(
                "scheduled %s sync started (slot %s)", kind, slot.isoformat(), extra={"event": "scheduled_sync_started"}
            )
            await self._start(kind, slot, run_id)
            status, error = await self._call_runner(kind, run_id)
            await self._finish(kind, status, error)

    async def _call_runner(self, kind: SyncKind, run_id: uuid.UUID) -> tuple[str, str | None]:
        try:
            report = await self.runner(kind, run_id)
        except RulesdError as exc:
            logger.error("scheduled %s sync failed: %s", kind, exc, extra={"event": "scheduled_sync_failed"})
            return "failed", str(exc)
        except Exception as exc:  # the scheduler must outlive any one failed run
            logger.exception("scheduled %s sync failed unexpectedly", kind, extra={"event": "scheduled_sync_failed"})
            return "failed", f"{type(exc).__name__}: {exc}"
        if report.succeeded:
            return "succeeded", None
        return "failed", "; ".join(f"{r.entity}: {r.error}" for r in report.failed)

    async def _load(self) -> dict[str, ScheduleRow]:
        conn = await async_connect(self.database_url, autocommit=True)
        try:
            cur = await conn.execute("SELECT kind, last_slot_at, last_status FROM st_sync_schedule")
            return {row[0]: ScheduleRow(*row) for row in await cur.fetchall()}
        finally:
            await conn.close()

    async def _store_slot(self, kind: str, slot: datetime) -> None:
        await self._execute(
            "INSERT INTO st_sync_schedule (kind, last_slot_at) VALUES (%s, %s) ON CONFLICT (kind) DO NOTHING",
            (kind, slot),
        )

    async def _start(self, kind: str, slot: datetime, run_id: uuid.UUID) -> None:
        # The slot is stored before the run, so a crash mid-run does not
        # repeat the slot; the interrupted run is finished by the next sync.
        await self._execute(
            "INSERT INTO st_sync_schedule (kind, last_slot_at, last_started_at, last_status, last_run_id)"
            " VALUES (%(kind)s, %(slot)s, %(now)s, 'running', %(run_id)s)"
            " ON CONFLICT (kind) DO UPDATE SET last_slot_at = excluded.last_slot_at,"
            " last_started_at = excluded.last_started_at, last_status = 'running',"
            " last_run_id = excluded.last_run_id, last_finished_at = NULL, last_error = NULL",
            {"kind": kind, "slot": slot, "now": self.clock.now(), "run_id": run_id},
        )

    async def _finish(self, kind: str, status: str, error: str | None) -> None:
        await self._execute(
            "UPDATE st_sync_schedule SET last_status = %s, last_error = %s, last_finished_at = %s WHERE kind = %s",
            (status, error, self.clock.now(), kind),
        )

    async def _execute(self, query: str, params: Any) -> None:
        conn = await async_connect(self.database_url, autocommit=True)
        try:
            await conn.execute(query, params)
        finally:
            await conn.close()

    async def _sleep_until(self, due: datetime, stop_event: StopEvent, wake: anyio.Event) -> None:
        seconds = self.clock.seconds_until(due)
        if seconds is None:
            # A fake clock moves only when a test advances it, which sets ``wake``.
            timeout = float("inf")
        else:
            # The floor keeps a process that cannot get the lock from spinning
            # on a due time another process has not moved yet.
            timeout = min(max(seconds, MIN_SLEEP), TICK)
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:

                async def wait_for(event: StopEvent | anyio.Event) -> None:
                    await event.wait()
                    group.cancel_scope.cancel()

                group.start_soon(wait_for, stop_event)
                group.start_soon(wait_for, wake)


async def run_scheduler(
    settings: Settings,
    database_url: str,
    *,
    stop_event: StopEvent,
    clock: SchedulerClock | None = None,
    runner: SyncRunner | None = None,
) -> None:
    """Run scheduled syncs until ``stop_event`` is set; the daemon calls this inside its task group.

    ``runner`` defaults to a real sync of every entity with log-line
    progress; tests pass their own. Raise ``ConfigError`` when the schedule
    settings are invalid.
    """
    schedule = Schedule.from_settings(settings)
    scheduler = Scheduler(database_url, schedule, runner or _sync_runner(settings, database_url), clock)
    await scheduler.run(stop_event)


def _sync_runner(settings: Settings, database_url: str) -> SyncRunner:
    from rulesd.sync.orchestrator import run_sync
    from rulesd.sync.progress import LogProgress

    async def run(kind: SyncKind, run_id: uuid.UUID) -> SyncReport:
        # The scheduler holds the sync lock across the whole round.
        return await run_sync(
            settings, database_url, kind=kind, progress=LogProgress(), take_lock=False, run_id=run_id
        )

    return run
