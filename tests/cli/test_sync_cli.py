"""``rulesd sync`` through the real command line: option checks, error messages and exit codes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from rulesd.db import migrate
from rulesd.servicetitan.catalog import ENTITY_LIST
from rulesd.servicetitan.simulator import SimulatorServer
from rulesd.servicetitan.simulator.testing import running_simulator
from rulesd.sync.progress import summary_table
from rulesd.sync.report import EntityResult, SyncReport
from rulesd.sync.upsert import UpsertCounts

COMMAND_TIMEOUT = 180  # seconds
RESPONSE_DELAY = 0.5  # seconds the simulator waits before each response, so a sync is still running when signalled
POLL_INTERVAL = 0.05  # seconds between looks at the sync log

# Credentials that pass the presence check. Tests using them fail before
# any request, and the URLs point at the discard port on loopback anyway.
PLACEHOLDER_CREDENTIALS = {
    "SERVICE_TITAN_TENANT_ID": "1000",
    "SERVICE_TITAN_CLIENT_ID": "cid.placeholder",
    "SERVICE_TITAN_CLIENT_SECRET": "cs.placeholder",
    "SERVICE_TITAN_APP_KEY": "ak1.placeholder",
    "SERVICE_TITAN_AUTH_URL": "http://127.0.0.1:9",
    "SERVICE_TITAN_API_URL": "http://127.0.0.1:9",
}


def clean_environment(**variables: str) -> dict[str, str]:
    """Return this process's environment without rulesd's variables, plus ``variables``."""
    prefixes = ("RULESD_", "SERVICETITAN_", "SERVICE_TITAN_")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    environment.update(variables)
    return environment


def simulator_environment(server: SimulatorServer, database_url: str) -> dict[str, str]:
    """Return an environment that points rulesd at ``server`` and ``database_url``."""
    return clean_environment(
        RULESD_DATABASE_URL=database_url,
        SERVICE_TITAN_TENANT_ID=str(server.tenant_id),
        SERVICE_TITAN_CLIENT_ID=server.client_id,
        SERVICE_TITAN_CLIENT_SECRET=server.client_secret,
        SERVICE_TITAN_APP_KEY=server.app_key,
        SERVICE_TITAN_AUTH_URL=server.base_url,
        SERVICE_TITAN_API_URL=server.base_url,
    )


def run_rulesd(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rulesd.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://postgres:secret pw@127.0.0.1:9/x", "secret pw"),
        ("127.0.0.1:9/secretdb", "secretdb"),
        ("host=127.0.0.1 port=9 password=secret pw", "secret"),
    ],
)
def test_sync_invalid_database_url_one_line(url: str, secret: str, tmp_path: Path) -> None:
    env = clean_environment(RULESD_DATABASE_URL=url, **PLACEHOLDER_CREDENTIALS)

    result = run_rulesd("sync", cwd=tmp_path, env=env)

    assert result.returncode == 3
    assert result.stderr.startswith("error: the database URL is not valid")
    assert "hint: write it as postgresql://user:password@host:port/dbname" in result.stderr
    assert len(result.stderr.splitlines()) == 2
    assert "Traceback" not in result.stderr
    assert secret not in result.stderr
    assert secret not in result.stdout


def test_sync_no_migrate_pending_schema(empty_database_url: str, tmp_path: Path) -> None:
    env = clean_environment(RULESD_DATABASE_URL=empty_database_url, **PLACEHOLDER_CREDENTIALS)

    result = run_rulesd("sync", "--initial", "--no-migrate", cwd=tmp_path, env=env)

    pending_count = len(migrate.discover())
    assert result.returncode == 3
    assert result.stderr.startswith(
        f"error: the database schema is not up to date: {pending_count} migrations pending, starting with 0001_"
    )
    assert "hint: run `rulesd db upgrade`, or drop --no-migrate" in result.stderr
    assert "Traceback" not in result.stderr
    assert migrate.pending(empty_database_url) == [m.path.name for m in migrate.discover()]


def test_sync_no_migrate_current_schema(database_url: str, tmp_path: Path) -> None:
    with running_simulator(seed=5, customers=20) as server:
        env = simulator_environment(server, database_url)
        result = run_rulesd("sync", "--entity", "campaign", "--no-migrate", "--json", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (("--initial", "--full"), ("--initial", "--full")),
        (("--full", "--initial"), ("--initial", "--full")),
        (("--schedule", "--json"), ("--schedule", "--json")),
        (("--schedule", "--full"), ("--schedule", "--full")),
    ],
    ids=["initial-full", "full-initial", "schedule-json", "schedule-full"],
)
def test_sync_conflicting_options_rejected(options: tuple[str, ...], named: tuple[str, ...], tmp_path: Path) -> None:
    # A rejected command never reaches the database, so it needs no server.
    env = clean_environment(RULESD_DATABASE_URL="postgresql://postgres@127.0.0.1:9/x", **PLACEHOLDER_CREDENTIALS)

    result = run_rulesd("sync", *options, cwd=tmp_path, env=env)

    assert result.returncode == 2
    error_line = result.stderr.strip().splitlines()[-1]
    assert error_line.startswith("Error: ")
    for option in named:
        assert option in error_line
    assert result.stdout == ""


def test_sync_help_lists_entities_lazily(tmp_path: Path) -> None:
    # Print the help in a fresh interpreter, then the heavy modules it loaded.
    script = (
        "import sys\n"
        "from rulesd.cli import main\n"
        "try:\n"
        "    main(['sync', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('loaded:', *sorted(m for m in sys.argv[1:] if m in sys.modules))\n"
    )
    heavy = ["httpx", "rich", "rulesd.servicetitan.client", "rulesd.sync.orchestrator"]
    result = subprocess.run(
        [sys.executable, "-c", script, *heavy],
        cwd=tmp_path,
        env=clean_environment(COLUMNS="80"),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )

    assert result.returncode == 0, result.stderr
    after_option = result.stdout.split("--entity NAME", 1)[1]
    entity_help = " ".join(after_option.split("--json", 1)[0].split())  # click wraps the help text
    for entity in ENTITY_LIST:
        assert f" {entity.name}," in entity_help or f" {entity.name}." in entity_help
    assert result.stdout.splitlines()[-1] == "loaded:"


def sync_log_statuses(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM st_sync_log GROUP BY status").fetchall()
    return {status: count for status, count in rows}


def wait_for_running_sync(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while sync_log_statuses(url).get("running", 0) == 0:
        assert process.poll() is None, "the sync exited before it could be signalled"
        assert time.monotonic() < deadline, "no entity sync started"
        time.sleep(POLL_INTERVAL)


@pytest.mark.parametrize(("signum", "exit_status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["int", "term"])
def test_sync_signal_stops_with_message(
    signum: signal.Signals, exit_status: int, database_url: str, tmp_path: Path
) -> None:
    with running_simulator(seed=5, customers=50) as server:
        env = simulator_environment(server, database_url)
        server.faults.delay = RESPONSE_DELAY
        process = subprocess.Popen(
            [sys.executable, "-m", "rulesd.cli", "sync", "--initial"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_running_sync(database_url, process)
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            process.kill()
            process.wait()
        left_running = sync_log_statuses(database_url).get("running", 0)

        server.faults.reset()
        rerun = run_rulesd("sync", "--json", cwd=tmp_path, env=env)

    assert process.returncode == exit_status
    assert stdout == ""
    assert stderr.splitlines()[-1] == (
        f"sync interrupted by {signum.name}; run `rulesd sync` to resume where it stopped"
        " (that run also closes the st_sync_log rows this one left running)"
    )
    assert "Aborted!" not in stderr
    assert "Traceback" not in stderr
    assert left_running > 0
    # The message's promises: the next run closes those rows and resumes.
    assert rerun.returncode == 0, rerun.stderr
    assert sync_log_statuses(database_url).get("running", 0) == 0
    assert any(entity["resumed"] for entity in json.loads(rerun.stdout)["entities"])


def fake_report(kind: str, row_kinds: dict[str, str], *, base_count: int, failed_entity: str | None = None) -> SyncReport:
    """Build a report over every catalog entity with counts from ``base_count`` up, as a large tenant has."""
    results = []
    for index, entity in enumerate(ENTITY_LIST):
        fetched = base_count + 7_919 * index
        row_kind = row_kinds.get(entity.name, kind)
        results.append(
            EntityResult(
                entity=entity.name,
                kind=row_kind,
                status="failed" if entity.name == failed_entity else "succeeded",
                counts=UpsertCounts(
                    received=fetched,
                    created=fetched // 9,
                    updated=fetched // 13,
                    unchanged=fetched - fetched // 9 - fetched // 13,
                    failed=3 if entity.name == failed_entity else 0,
                ),
                missing=index * 11 if row_kind == "full" else 0,
                seconds=100.0 + index,
                resumed=entity.name == "customer",
            )
        )
    return SyncReport(run_id=uuid.uuid4(), kind=kind, results=tuple(results), seconds=1_234.5)


def render_summary(report: SyncReport, width: int = 80) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(summary_table(report))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def expected_cells(result: EntityResult, *, missing: bool) -> list[str]:
    counts = result.counts
    cells = [f"{counts.received:,}", f"{counts.created:,}", f"{counts.updated:,}", f"{counts.unchanged:,}"]
    if missing:
        cells.append(f"{result.missing:,}")
    cells.append(f"{result.seconds:.1f}")
    return cells


def row_of(lines: list[str], entity: str) -> list[str]:
    rows = [line.split() for line in lines if line.split()[:1] == [entity]]
    assert len(rows) == 1, f"{entity} is not the first word of exactly one line"
    return rows[0]


@pytest.mark.parametrize("kind", ["initial", "full"])
def test_summary_table_fits_80_columns(kind: str) -> None:
    # About 1.2 million records, the size of a 50,000-customer tenant, so the totals have seven digits.
    report = fake_report(kind, {}, base_count=6_000)

    lines = render_summary(report)

    assert max(len(line) for line in lines) <= 80
    assert "…" not in "\n".join(lines)
    assert "kind" not in lines[1].split()
    assert lines[0].startswith(f"{kind} sync {report.run_id} succeeded")
    for result in report.results:
        expected = expected_cells(result, missing=kind == "full")
        assert row_of(lines, result.entity)[-len(expected) :] == expected
    totals = row_of(lines, "total")
    assert f"{report.totals.received:,}" in totals
    assert f"{report.totals.unchanged:,}" in totals


def test_summary_table_notes_mixed_rows() -> None:
    report = fake_report("incremental", {"job_type": "initial", "customer": "full"}, base_count=20_000, failed_entity="job")

    lines = render_summary(report)

    assert max(len(line) for line in lines) <= 80
    assert "…" not in "\n".join(lines)
    assert lines[0].startswith(f"incremental sync {report.run_id}: 1 of 17 entities failed")
    for result in report.results:
        expected = expected_cells(result, missing=True)
        assert row_of(lines, result.entity)[-len(expected) :] == expected
    # Rendered wide, so that no note wraps onto a line of its own.
    line_by_entity = {line.split()[0]: line for line in render_summary(report, width=160) if line.split()}
    assert "job_type (initial)" in line_by_entity["job_type"]
    assert "customer (full, resumed)" in line_by_entity["customer"]
    assert "job (failed, 3 failed records)" in line_by_entity["job"]
    assert "(" not in line_by_entity["estimate"]
