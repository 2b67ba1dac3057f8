"""The whole path through a running daemon: change, enrollment, first step, stop, and explain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import psycopg
from click.testing import CliRunner

from rulesd.cli import main
from rulesd.daemon import Daemon, DaemonOptions
from rulesd.engine.clock import FakeClock
from tests.engine.conftest import ESTIMATE_RULE, CountingExecutor, fast_settings, insert_customer, insert_estimate, update_row

WAIT = 10.0  # seconds; an upper bound for the wait loops, not a measured latency


async def _wait_for(conn: psycopg.AsyncConnection[Any], query: str, params: Any, timeout: float = WAIT) -> Any:
    with anyio.fail_after(timeout):
        while True:
            row = await (await conn.execute(query, params)).fetchone()
            if row is not None:
                return row
            await anyio.sleep(0.02)


def test_daemon_estimate_follow_up_end_to_end(database_url: str) -> None:
    clock = FakeClock()
    executor = CountingExecutor()
    # poll_interval is one hour, so only NOTIFY can wake the trigger engine in time.
    daemon = Daemon(
        fast_settings(),
        database_url,
        DaemonOptions(rules_paths=[ESTIMATE_RULE], sync=False, executor=executor, clock=clock, handle_signals=False),
    )

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(daemon.run)
            with anyio.fail_after(WAIT):
                while daemon.ready is None:
                    await anyio.sleep(0.01)
                await daemon.ready.wait()
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                await _drive(conn)
            daemon.stop()

    async def _drive(conn: psycopg.AsyncConnection[Any]) -> None:
        with psycopg.connect(database_url, autocommit=True) as sync_conn:
            insert_customer(sync_conn, 7)
            insert_estimate(sync_conn, 123, 7)

        enrolled = await _wait_for(
            conn, "SELECT id, status, current_step FROM workflow_instances WHERE entity_id = 123", None, timeout=5.0
        )
        instance_id = enrolled[0]
        assert enrolled[1] == "active"
        assert enrolled[2] == "text"
        assert executor.requests == []

        # Jump the fake clock to the step's due time. The business-hours
        # window may defer the step; then jump to the time it was deferred to.
        (due,) = await _wait_for(conn, "SELECT next_run_at FROM workflow_instances WHERE id = %s", (instance_id,))
        clock.set(due - timedelta(minutes=1))
        await anyio.sleep(0.3)
        assert executor.requests == []
        clock.set(due)
        first_run = await _wait_for(
            conn, "SELECT status, defer_until FROM workflow_step_runs WHERE instance_id = %s ORDER BY id LIMIT 1", (instance_id,)
        )
        if first_run[0] == "deferred":
            clock.set(first_run[1])
        await _wait_for(conn, "SELECT 1 FROM workflow_step_runs WHERE instance_id = %s AND status = 'done'", (instance_id,))
        assert executor.steps() == [(123, "text")]
        assert executor.requests[0].context.now >= due

        # The daemon's first heartbeat comes a second after start.
        await anyio.sleep(1.5)
        status = await anyio.to_thread.run_sync(
            CliRunner().invoke, main, ["--database-url", database_url, "status"]
        )
        assert status.exit_code == 0, status.output
        assert "estimate-follow-up (version" in status.output
        assert "estimate-follow-up / email: 1 (0 running)" in status.output
        assert "listener listening" in status.output

        with psycopg.connect(database_url, autocommit=True) as sync_conn:
            update_row(sync_conn, "st_estimates", 123, status="Sold")
        stopped = await _wait_for(
            conn, "SELECT stop_reason FROM workflow_instances WHERE id = %s AND status = 'stopped'", (instance_id,)
        )
        assert "estimate.status in ['Sold', 'Dismissed']" in stopped[0]

        clock.advance(timedelta(days=10))
        await anyio.sleep(0.5)
        assert executor.steps() == [(123, "text")]

    anyio.run(scenario)

    result = CliRunner().invoke(main, ["--database-url", database_url, "explain", "estimate:123"])
    assert result.exit_code == 0, result.output
    assert "enrolled in rule estimate-follow-up" in result.output
    assert "step text attempt 1: done" in result.output
    assert "stopped enrollment" in result.output
    assert "stop_if held after estimate 123 status_changed (Open -> Sold)" in result.output
    assert "email" not in result.output.split("stopped enrollment")[1]
