"""The sync scheduler with a fake clock: intervals, cron slots across DST, restarts and the lock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import anyio
import psycopg
import pytest

from rulesd.config import BusinessSettings, Settings, SyncSettings
from rulesd.errors import ConfigError
from rulesd.sync.lock import SyncLock
from rulesd.sync.report import EntityResult, SyncReport
from rulesd.sync.scheduler import Schedule, Scheduler, run_scheduler
from rulesd.sync.state import SyncKind

CHICAGO = ZoneInfo("America/Chicago")


class FakeClock:
    """Stands still until ``advance``; wakes subscribed events when it moves."""

    def __init__(self, start: datetime) -> None:
        self.current = start
        self.events: list[anyio.Event] = []

    def now(self) -> datetime:
        return self.current

    def seconds_until(self, when: datetime) -> float | None:
        return None

    def subscribe(self, event: anyio.Event) -> None:
        self.events.append(event)

    def advance(self, delta: timedelta) -> None:
        self.current += delta
        events, self.events = self.events, []
        for event in events:
            event.set()


class RecordingRunner:
    """Stands in for a real sync: records each kind with the fake time it started."""

    def __init__(self, clock: FakeClock, *, fail: bool = False) -> None:
        self.clock = clock
        self.fail = fail
        self.calls: list[tuple[SyncKind, datetime]] = []
        self.called = asyncio.Event()

    async def __call__(self, kind: SyncKind, run_id: uuid.UUID) -> SyncReport:
        self.calls.append((kind, self.clock.now()))
        self.called.set()
        status = "failed" if self.fail else "succeeded"
        result = EntityResult(entity="customer", kind=kind, status=status, error="boom" if self.fail else None)
        return SyncReport(run_id=run_id, kind=kind, results=(result,), seconds=0.0)

    def times(self, kind: SyncKind) -> list[datetime]:
        return [when for called, when in self.calls if called == kind]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHICAGO).astimezone(timezone.utc)


def schedule(cron: str = "0 2 * * *", minutes: int = 5) -> Schedule:
    return Schedule(timedelta(minutes=minutes), cron, CHICAGO)


def test_schedule_spring_forward_slot_runs_after_gap() -> None:
    slot = schedule("30 2 * * *").next_full_slot(local(2026, 3, 7, 3, 0))

    assert slot == datetime(2026, 3, 8, 8, 0, tzinfo=timezone.utc)  # 03:00 CDT, right after the gap


def test_schedule_fall_back_slot_runs_once() -> None:
    plan = schedule("30 1 * * *")

    first = plan.next_full_slot(local(2026, 10, 31, 3, 0))
    second = plan.next_full_slot(first)

    assert first == datetime(2026, 11, 1, 6, 30, tzinfo=timezone.utc)  # 01:30 CDT
    assert second == datetime(2026, 11, 2, 7, 30, tzinfo=timezone.utc)  # next day, 01:30 CST


def test_schedule_latest_slot_collapses_missed_slots() -> None:
    plan = schedule()

    slot = plan.latest_full_slot(local(2026, 5, 1, 12, 0), local(2026, 5, 4, 9, 0))

    assert slot == local(2026, 5, 4, 2, 0)


def test_schedule_latest_slot_none_before_due() -> None:
    assert schedule().latest_full_slot(local(2026, 5, 1, 12, 0), local(2026, 5, 2, 1, 59)) is None


def test_schedule_rejects_invalid_cron() -> None:
    settings = Settings(sync=SyncSettings(full_schedule="every night"))

    with pytest.raises(ConfigError, match="invalid cron expression 'every night'"):
        Schedule.from_settings(settings)


def test_schedule_rejects_unknown_timezone() -> None:
    settings = Settings(business=BusinessSettings(timezone="Mars/Olympus"))

    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        Schedule.from_settings(settings)


async def advance_and_run(scheduler: Scheduler, clock: FakeClock, until: datetime, step: timedelta) -> None:
    while clock.now() < until:
        clock.advance(step)
        await scheduler.run_due()


def test_scheduler_runs_on_time_across_dst(database_url: str) -> None:
    # Saturday 2026-03-07 23:00 CST to Monday 00:00 CDT: the spring-forward
    # night (no 02:00) lies in between.
    clock = FakeClock(local(2026, 3, 7, 23, 0))
    runner = RecordingRunner(clock)
    scheduler = Scheduler(database_url, schedule(), runner, clock)

    async def scenario() -> None:
        await scheduler.run_due()
        await advance_and_run(scheduler, clock, local(2026, 3, 9, 0, 0), timedelta(minutes=5))

    asyncio.run(scenario())

    assert runner.times("full") == [local(2026, 3, 8, 3, 0)]
    incremental = runner.times("incremental")
    assert incremental[0] == local(2026, 3, 7, 23, 0)
    gaps = {later - earlier for earlier, later in zip(incremental, incremental[1:])}
    assert gaps <= {timedelta(minutes=5), timedelta(0)}
    assert local(2026, 3, 8, 3, 0) in incremental  # the incremental run just before the full one
    assert len(incremental) == 24 * 12 + 1  # 24 real hours (25 on the clock face, minus the gap)
    assert runner.calls.index(("full", local(2026, 3, 8, 3, 0))) == runner.calls.index(
        ("incremental", local(2026, 3, 8, 3, 0))
    ) + 1


def test_scheduler_restart_neither_skips_nor_repeats(database_url: str) -> None:
    clock = FakeClock(local(2026, 6, 1, 20, 0))
    first = RecordingRunner(clock)

    async def before_restart() -> None:
        scheduler = Scheduler(database_url, schedule(), first, clock)
        await scheduler.run_due()
        await advance_and_run(scheduler, clock, local(2026, 6, 2, 2, 0), timedelta(minutes=5))

    asyncio.run(before_restart())
    assert first.times("full") == [local(2026, 6, 2, 2, 0)]

    # Down from 02:00 on the 2nd until 09:10 on the 4th: two full slots missed.
    clock.advance(local(2026, 6, 4, 9, 10) - clock.now())
    second = RecordingRunner(clock)

    async def after_restart() -> None:
        scheduler = Scheduler(database_url, schedule(), second, clock)
        await scheduler.run_due()
        await scheduler.run_due()

    asyncio.run(after_restart())
    assert second.times("full") == [local(2026, 6, 4, 9, 10)]
    assert second.times("incremental") == [local(2026, 6, 4, 9, 10)]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT last_slot_at, last_status FROM st_sync_schedule WHERE kind = 'full'").fetchone()
    assert row == (local(2026, 6, 4, 2, 0), "succeeded")


def test_scheduler_first_start_waits_for_cron_slot(database_url: str) -> None:
    clock = FakeClock(local(2026, 6, 1, 3, 0))
    runner = RecordingRunner(clock)
    scheduler = Scheduler(database_url, schedule(), runner, clock)

    async def scenario() -> None:
        await scheduler.run_due()
        await advance_and_run(scheduler, clock, local(2026, 6, 2, 1, 55), timedelta(minutes=5))

    asyncio.run(scenario())

    assert runner.times("full") == []
    assert len(runner.times("incremental")) == 12 * 22 + 12  # 03:00 to 01:55 every 5 min


def test_scheduler_records_failed_run(database_url: str) -> None:
    clock = FakeClock(local(2026, 6, 1, 3, 0))
    scheduler = Scheduler(database_url, schedule(), RecordingRunner(clock, fail=True), clock)

    asyncio.run(scheduler.run_due())

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT last_status, last_error FROM st_sync_schedule WHERE kind = 'incremental'").fetchone()
    assert row == ("failed", "customer: boom")


def test_scheduler_skips_while_lock_held(database_url: str) -> None:
    clock = FakeClock(local(2026, 6, 1, 3, 0))
    runner = RecordingRunner(clock)
    scheduler = Scheduler(database_url, schedule(), runner, clock)

    async def scenario() -> list[SyncKind]:
        async with SyncLock(database_url) as lock:
            assert lock.acquired
            return await scheduler.run_due()

    assert asyncio.run(scenario()) == []
    assert runner.calls == []


def test_run_scheduler_wakes_when_clock_moves(database_url: str) -> None:
    clock = FakeClock(local(2026, 6, 1, 3, 0))
    runner = RecordingRunner(clock)
    settings = Settings(business=BusinessSettings(timezone="America/Chicago"))

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_scheduler(settings, database_url, stop_event=stop, clock=clock, runner=runner))
        async with asyncio.timeout(20):
            await runner.called.wait()
            runner.called.clear()
            while len(runner.calls) < 3:
                clock.advance(timedelta(minutes=5))
                await runner.called.wait()
                runner.called.clear()
        stop.set()
        async with asyncio.timeout(20):
            await task

    asyncio.run(scenario())

    assert runner.times("incremental") == [
        local(2026, 6, 1, 3, 0),
        local(2026, 6, 1, 3, 5),
        local(2026, 6, 1, 3, 10),
    ]
