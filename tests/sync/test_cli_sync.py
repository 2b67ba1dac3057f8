"""``rulesd sync`` as a user runs it: a subprocess against the simulator, including a SIGKILL half way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rulesd.servicetitan.catalog import ENTITY_LIST
from rulesd.servicetitan.simulator import SimulatorServer
from rulesd.servicetitan.simulator.testing import running_simulator

COMMAND_TIMEOUT = 240  # seconds; a sync of the test tenant takes a few
KILL_POLL = 0.02  # seconds between looks at the sync log while waiting to kill


@pytest.fixture
def large_simulator() -> Iterator[SimulatorServer]:
    """A 2,000-customer tenant (about 50,000 records): big enough to kill a sync half way."""
    with running_simulator(seed=11, customers=2000) as server:
        yield server


def environment(server: SimulatorServer, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RULESD_DATABASE_URL": database_url,
            "SERVICE_TITAN_TENANT_ID": str(server.tenant_id),
            "SERVICE_TITAN_CLIENT_ID": server.client_id,
            "SERVICE_TITAN_CLIENT_SECRET": server.client_secret,
            "SERVICE_TITAN_APP_KEY": server.app_key,
            "SERVICE_TITAN_AUTH_URL": server.base_url,
            "SERVICE_TITAN_API_URL": server.base_url,
        }
    )
    return env


def write_config(directory: Path, *, max_retries: int = 10) -> Path:
    path = directory / "rulesd.yaml"
    path.write_text(
        f"servicetitan:\n  page_delay: 0\n  rate_limit: 0\n  page_size: 500\n  max_retries: {max_retries}\n"
        "sync:\n  batch_size: 500\n  concurrency: 4\n",
        encoding="utf-8",
    )
    return path


def rulesd_command(config: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-c", "from rulesd.cli import main; main()", "--config", str(config), *arguments]


def mirror_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            entity.name: conn.execute(f"SELECT count(*) FROM {entity.table}").fetchone()[0]  # type: ignore[index]
            for entity in ENTITY_LIST
        }


def fetched_so_far(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(fetched), 0) FROM st_sync_log").fetchone()
    assert row is not None
    return int(row[0])


def test_cli_sync_initial_prints_json_summary(database_url: str, tmp_path: Path) -> None:
    with running_simulator(seed=5, customers=100) as server:
        result = subprocess.run(
            rulesd_command(write_config(tmp_path), "sync", "--initial", "--json"),
            env=environment(server, database_url),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        expected = server.sim.counts()

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded"
    assert summary["kind"] == "initial"
    assert {e["entity"]: e["created"] for e in summary["entities"]} == expected
    assert mirror_counts(database_url) == expected


def test_cli_sync_table_summary_and_failure_exit(database_url: str, tmp_path: Path) -> None:
    with running_simulator(seed=5, customers=50) as server:
        env = environment(server, database_url)
        ok = subprocess.run(
            rulesd_command(write_config(tmp_path), "sync", "--entity", "customer"),
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        server.faults.burst(1000, status=503)
        failed = subprocess.run(
            rulesd_command(write_config(tmp_path, max_retries=0), "sync", "--entity", "customer", "--entity", "job"),
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    assert ok.returncode == 0, ok.stderr
    assert "customer" in ok.stdout
    assert "fetched" in ok.stdout
    assert failed.returncode == 5
    assert "error: 2 of 2 entities failed: customer:" in failed.stderr


def test_cli_sync_killed_half_way_resumes(database_url: str, large_simulator: SimulatorServer, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = environment(large_simulator, database_url)
    expected = large_simulator.sim.counts()
    total = sum(expected.values())

    process = subprocess.Popen(
        rulesd_command(config, "sync", "--initial"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while fetched_so_far(database_url) < total // 3:
            assert process.poll() is None, "the sync finished before it could be killed"
            assert time.monotonic() < deadline, "the sync made no progress"
            time.sleep(KILL_POLL)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=COMMAND_TIMEOUT)
    assert process.returncode == -signal.SIGKILL
    loaded_before_kill = sum(mirror_counts(database_url).values())
    assert 0 < loaded_before_kill < total

    rerun = subprocess.run(
        rulesd_command(config, "sync", "--initial", "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )

    assert rerun.returncode == 0, rerun.stderr
    assert mirror_counts(database_url) == expected
    summary = json.loads(rerun.stdout)
    assert summary["fetched"] < total  # resumed, not restarted
    assert summary["created"] == total - loaded_before_kill
    assert any(e["resumed"] for e in summary["entities"])
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM workflow_events").fetchone() == (0,)
        statuses = dict(conn.execute("SELECT status, count(*) FROM st_sync_log GROUP BY status").fetchall())
    assert statuses.get("running", 0) == 0
    assert statuses.get("failed", 0) >= 1  # the killed run's rows, closed as interrupted


def test_cli_full_sync_keeps_pending_change_events(database_url: str, tmp_path: Path) -> None:
    with running_simulator(seed=5, customers=100) as server:
        config = write_config(tmp_path)
        env = environment(server, database_url)
        initial = subprocess.run(rulesd_command(config, "sync", "--initial", "--json"), env=env,
                                 capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        assert initial.returncode == 0, initial.stderr
        estimate = next(i for i in range(server.sim.table("estimate").count) if server.sim.status_name("estimate", i) == "Open")
        sold = server.sim.apply("sell_estimate", id=server.sim.table("estimate").record_id(estimate))

        full = subprocess.run(rulesd_command(config, "sync", "--full", "--json"), env=env,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT)

    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["kind"] == "full"
    with psycopg.connect(database_url) as conn:
        events = conn.execute(
            "SELECT kind, status_to FROM workflow_events WHERE entity = 'estimate' AND entity_id = %s", (sold["id"],)
        ).fetchall()
    assert events == [("status_changed", "Sold")]
