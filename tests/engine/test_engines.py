"""Trigger and execution engines driven pass by pass against a real Postgres, with a fake clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from click.testing import CliRunner

from rulesd.cli import main
from rulesd.engine.clock import FakeClock
from rulesd.engine.executor import StepResult
from tests.engine.conftest import CountingExecutor, fast_settings, insert_customer, insert_estimate, open_engines, update_row

RULE = """\
rule: {rule_id}
trigger:
  on: estimate.{kind}
  if: estimate.total > 100
enroll:
  key: estimate.id
  on_retrigger: {on_retrigger}
stop_if: estimate.status == 'Sold'
steps:
  - name: first
    after: 1h
    do: Call {{{{customer.name}}}} about {{{{estimate.name}}}}.
    tools: [send_sms]
  - name: second
    after: 1d
    do: Write to {{{{customer.name}}}}.
    tools: [send_email]
"""


def write_rule(directory: Path, rule_id: str = "follow-up", kind: str = "updated", on_retrigger: str = "ignore") -> Path:
    path = directory / f"{rule_id}.yaml"
    path.write_text(RULE.format(rule_id=rule_id, kind=kind, on_retrigger=on_retrigger), encoding="utf-8")
    return path


def rows(database_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def seed(database_url: str, *estimate_ids: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        insert_customer(conn, 1)
        for estimate_id in estimate_ids:
            insert_estimate(conn, estimate_id, 1)


def touch(database_url: str, estimate_id: int, **columns: Any) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        update_row(conn, "st_estimates", estimate_id, **columns)


@pytest.mark.parametrize(
    ("on_retrigger", "active", "stopped"),
    [("ignore", 1, 0), ("restart", 1, 1), ("parallel", 2, 0)],
)
def test_trigger_on_retrigger(database_url: str, tmp_path: Path, on_retrigger: str, active: int, stopped: int) -> None:
    rule = write_rule(tmp_path, on_retrigger=on_retrigger)
    seed(database_url, 10)

    async def scenario() -> None:
        async with open_engines(database_url, [rule], CountingExecutor()) as engines:
            await engines.triggers.drain()  # the insert: not an update
            touch(database_url, 10, name="Furnace")
            await engines.triggers.drain()
            touch(database_url, 10, name="Boiler")
            await engines.triggers.drain()

    anyio.run(scenario)
    counts = dict(rows(database_url, "SELECT status, count(*) FROM workflow_instances GROUP BY status"))
    assert counts.get("active", 0) == active
    assert counts.get("stopped", 0) == stopped
    assert rows(database_url, "SELECT count(*) FROM workflow_events WHERE processed_at IS NULL") == [(0,)]


def test_trigger_ignores_changes_older_than_max_age(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, 10)
    touch(database_url, 10, name="Furnace")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE workflow_events SET occurred_at = now() - interval '2 days'")

    async def scenario() -> None:
        async with open_engines(database_url, [rule], CountingExecutor()) as engines:
            result = await engines.triggers.drain()
            assert result.events == 3  # customer and estimate created, estimate updated
            assert result.enrolled == []

    anyio.run(scenario)
    assert rows(database_url, "SELECT count(*) FROM workflow_instances") == [(0,)]


def test_trigger_stop_if_stops_active_enrollment(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, 10)

    async def scenario() -> None:
        async with open_engines(database_url, [rule], CountingExecutor()) as engines:
            touch(database_url, 10, name="Furnace")
            assert len((await engines.triggers.drain()).enrolled) == 1
            touch(database_url, 10, status="Sold")
            assert len((await engines.triggers.drain()).stopped) == 1

    anyio.run(scenario)
    [(status, reason)] = rows(database_url, "SELECT status, stop_reason FROM workflow_instances")
    assert status == "stopped"
    assert "estimate 10 status_changed (Open -> Sold)" in reason


def test_trigger_flood_guard_pauses_and_resume(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, *range(1, 8))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE st_estimates SET name = 'changed'")
    settings = fast_settings(flood_limit=5)

    async def first_pass() -> None:
        async with open_engines(database_url, [rule], CountingExecutor(), settings=settings) as engines:
            result = await engines.triggers.drain()
            assert len(result.enrolled) == 5
            assert result.paused == ["follow-up"]

    anyio.run(first_pass)
    [(reason,)] = rows(database_url, "SELECT paused_reason FROM workflow_rule_state WHERE paused_at IS NOT NULL")
    assert "more than 5 records within an hour" in reason

    status = CliRunner().invoke(main, ["--database-url", database_url, "status"])
    assert status.exit_code == 0, status.output
    assert "PAUSED" in status.output

    resumed = CliRunner().invoke(main, ["--database-url", database_url, "rules", "resume", "follow-up"])
    assert resumed.exit_code == 0, resumed.output
    again = CliRunner().invoke(main, ["--database-url", database_url, "rules", "resume", "follow-up"])
    assert again.exit_code == 1

    async def after_resume() -> None:
        async with open_engines(database_url, [rule], CountingExecutor(), settings=settings) as engines:
            touch(database_url, 6, name="again")
            result = await engines.triggers.drain()
            assert result.paused == []

    anyio.run(after_resume)
    assert rows(database_url, "SELECT count(*) FROM workflow_instances WHERE entity_id = 6") == [(1,)]


def test_execution_runs_steps_in_order(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, 10)
    executor = CountingExecutor()
    clock = FakeClock()

    async def scenario() -> None:
        async with open_engines(database_url, [rule], executor, clock=clock) as engines:
            touch(database_url, 10, name="Furnace")
            await engines.triggers.drain()
            assert await engines.execution.run_due() == []
            clock.advance(timedelta(hours=2))
            [first] = await engines.execution.run_due()
            assert (first.step, first.status) == ("first", "done")
            clock.advance(timedelta(hours=23))
            assert await engines.execution.run_due() == []
            clock.advance(timedelta(hours=2))
            [second] = await engines.execution.run_due()
            assert (second.step, second.status) == ("second", "done")

    anyio.run(scenario)
    assert executor.steps() == [(10, "first"), (10, "second")]
    assert executor.requests[0].action == "Call Customer 1 about Furnace."
    assert rows(database_url, "SELECT status FROM workflow_instances") == [("completed",)]


def test_execution_transient_retries_then_fails(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, 10)
    executor = CountingExecutor(
        outcomes=[StepResult(outcome="transient", detail="provider timed out")] * 3
    )
    clock = FakeClock()

    async def scenario() -> None:
        settings = fast_settings(max_attempts=3)
        async with open_engines(database_url, [rule], executor, clock=clock, settings=settings) as engines:
            touch(database_url, 10, name="Furnace")
            await engines.triggers.drain()
            statuses = []
            for _ in range(3):
                clock.advance(timedelta(hours=3))
                statuses += [outcome.status for outcome in await engines.execution.run_due()]
            assert statuses == ["transient", "transient", "transient"]

    anyio.run(scenario)
    [(status, error, attempt)] = rows(database_url, "SELECT status, error, attempt FROM workflow_instances")
    assert status == "failed"
    assert attempt == 3
    assert "provider timed out" in error
    assert rows(database_url, "SELECT attempt, status FROM workflow_step_runs ORDER BY id") == [
        (1, "transient"), (2, "transient"), (3, "transient")
    ]


def test_execution_deferral_does_not_count_attempt(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, 10)
    clock = FakeClock()
    executor = CountingExecutor(outcomes=[StepResult(outcome="deferred", defer_until=clock.now() + timedelta(hours=10))])

    async def scenario() -> None:
        async with open_engines(database_url, [rule], executor, clock=clock) as engines:
            touch(database_url, 10, name="Furnace")
            await engines.triggers.drain()
            clock.advance(timedelta(hours=2))
            [deferred] = await engines.execution.run_due()
            assert deferred.status == "deferred"
            clock.advance(timedelta(hours=7))
            assert await engines.execution.run_due() == []
            clock.advance(timedelta(hours=2))
            [done] = await engines.execution.run_due()
            assert done.status == "done"

    anyio.run(scenario)
    assert rows(database_url, "SELECT step, attempt, status FROM workflow_step_runs ORDER BY id") == [
        ("first", 1, "deferred"), ("first", 1, "done")
    ]


def expire_leases(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE workflow_instances SET lease_expires_at = now() - interval '1 second'")


def test_execution_expired_lease_cannot_write_back(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, 10)
    clock = FakeClock()
    executor = CountingExecutor()

    async def scenario() -> None:
        async with open_engines(database_url, [rule], executor, clock=clock) as engines:
            async with open_engines(database_url, [rule], executor, clock=clock) as other:
                touch(database_url, 10, name="Furnace")
                await engines.triggers.drain()
                clock.advance(timedelta(hours=2))
                [stale] = await engines.execution.claim(1)
                # The first daemon stalls past its lease; the second takes over.
                # Leases expire on the database's real clock, so moving the
                # fake clock alone must not free the enrollment.
                clock.advance(timedelta(minutes=5))
                assert await other.execution.claim(1) == []
                expire_leases(database_url)
                [fresh] = await other.execution.claim(1)
                assert fresh.lease_token == stale.lease_token + 1
                late = await engines.execution.run_claim(stale)
                assert late.status == "lease_lost"
                current = await other.execution.run_claim(fresh)
                assert current.status == "done"

    anyio.run(scenario)
    [(step, attempt)] = rows(database_url, "SELECT current_step, attempt FROM workflow_instances")
    assert step == "second"
    assert attempt == 0
    assert len(executor.requests) == 1


def test_rule_reload_error_and_removal(database_url: str, tmp_path: Path) -> None:
    rule = write_rule(tmp_path)
    seed(database_url, 10)

    async def scenario() -> None:
        async with open_engines(database_url, [tmp_path], CountingExecutor()) as engines:
            touch(database_url, 10, name="Furnace")
            await engines.triggers.drain()
            rule.write_text("rule: follow-up\ntrigger: {on: estimate.updatd}\n", encoding="utf-8")
            assert await engines.holder.reload() is False
            assert engines.holder.current.get("follow-up") is not None
            assert any("updatd" in line for line in engines.holder.last_errors)
            rule.unlink()
            write_rule(tmp_path, rule_id="other")
            assert await engines.holder.reload() is True
            assert engines.holder.current.get("follow-up") is None

    anyio.run(scenario)
    [(status, reason)] = rows(database_url, "SELECT status, stop_reason FROM workflow_instances")
    assert status == "cancelled"
    assert reason == "rule follow-up was removed from the rule set"
    assert rows(database_url, "SELECT rule_id FROM workflow_definitions ORDER BY rule_id") == [("follow-up",), ("other",)]


def test_trigger_enroll_once_skips_ended_keys(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "once.yaml"
    path.write_text(
        RULE.format(rule_id="once", kind="updated", on_retrigger="ignore").replace(
            "  on_retrigger: ignore\n", "  on_retrigger: ignore\n  once: true\n"
        ),
        encoding="utf-8",
    )
    again = write_rule(tmp_path, rule_id="again")
    seed(database_url, 10)

    async def scenario() -> None:
        async with open_engines(database_url, [path, again], CountingExecutor()) as engines:
            await engines.triggers.drain()  # the insert: not an update
            touch(database_url, 10, name="Furnace")
            await engines.triggers.drain()
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("UPDATE workflow_instances SET status = 'completed', next_run_at = NULL")
            touch(database_url, 10, name="Boiler")
            await engines.triggers.drain()

    anyio.run(scenario)
    counts = rows(database_url, "SELECT rule_id, count(*) FROM workflow_instances GROUP BY rule_id ORDER BY rule_id")
    assert counts == [("again", 2), ("once", 1)]
    assert rows(database_url, "SELECT count(*) FROM workflow_events WHERE processed_at IS NULL") == [(0,)]
