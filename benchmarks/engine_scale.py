"""Check the due-step query and the daemon's memory with 1,000,000 active enrollments.

Inserts ``--enrollments`` active enrollments (all but ``--due`` of them due
over the next 30 days) and runs ANALYZE. Prints the plans and timings of
the claim query and the next-due query. Then runs a daemon (recording
executor, no sync) in a child process for ``--seconds`` and reports its
peak resident memory while it claims the due enrollments.

    python benchmarks/engine_scale.py [--database-url URL] [--enrollments 1000000]

Without a URL it starts an embedded Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

import anyio
import psycopg

from benchmarks.engine_common import bench_settings, scratch_database
from rulesd.daemon import Daemon, DaemonOptions
from rulesd.engine.executor import RecordingExecutor

REPOSITORY = Path(__file__).resolve().parents[1]
RULE = REPOSITORY / "rules" / "estimate-follow-up.yaml"

# The inner SELECT of the execution engine's claim (rulesd.engine.store.claim_due).
CLAIM_QUERY = """
SELECT id, next_run_at AS due_at FROM workflow_instances
 WHERE status = 'active' AND next_run_at <= now() AND rule_id = ANY(%s)
 ORDER BY next_run_at LIMIT 8 FOR UPDATE SKIP LOCKED
"""
NEXT_DUE_QUERY = """
SELECT next_run_at FROM workflow_instances
 WHERE status = 'active' AND next_run_at IS NOT NULL AND rule_id = ANY(%s)
 ORDER BY next_run_at LIMIT 1
"""


def seed(url: str, count: int, due: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            """
            INSERT INTO workflow_instances
                (rule_id, rule_version, entity, entity_id, enrollment_key, status, current_step,
                 next_run_at, enrolled_at, updated_at)
            SELECT 'estimate-follow-up', 'bench', 'estimate', n, 'estimate:' || n, 'active', 'text',
                   CASE WHEN n <= %(due)s THEN now() - interval '1 minute'
                        ELSE now() + interval '1 day' + (n %% 43200) * interval '1 minute' END,
                   now(), now()
              FROM generate_series(1, %(count)s) AS n
            """,
            {"count": count, "due": due},
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE workflow_instances")


def explain(url: str) -> None:
    with psycopg.connect(url) as conn:
        for label, query in (("claim", CLAIM_QUERY), ("next due", NEXT_DUE_QUERY)):
            plan = conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query, (["estimate-follow-up"],)).fetchall()
            print(f"--- {label} query plan")
            for (line,) in plan:
                print("   ", line)
            conn.rollback()


def run_daemon(url: str, seconds: float) -> None:
    logging.basicConfig(level=logging.WARNING)
    daemon = Daemon(
        bench_settings(max_concurrent_steps=16),
        url,
        DaemonOptions(rules_paths=[RULE], sync=False, executor=RecordingExecutor(), handle_signals=False),
    )

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(daemon.run)
            await anyio.sleep(seconds)
            daemon.stop()

    anyio.run(main, backend="asyncio")


def peak_rss(url: str, seconds: float) -> int:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.engine_scale", "--run-daemon", url, "--seconds", str(seconds)],
        cwd=REPOSITORY,
    )
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.2)
    process.wait()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="Postgres server to create the scratch database on")
    parser.add_argument("--enrollments", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=2000, help="enrollments due at once (default 2000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the daemon runs (default 30)")
    parser.add_argument("--run-daemon", metavar="URL", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.run_daemon:
        run_daemon(arguments.run_daemon, arguments.seconds)
        return

    with scratch_database(arguments.database_url) as url:
        started = time.perf_counter()
        seed(url, arguments.enrollments, arguments.due)
        print(f"seeded {arguments.enrollments:,} active enrollments in {time.perf_counter() - started:.1f} s")
        explain(url)
        peak = peak_rss(url, arguments.seconds)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM workflow_step_runs").fetchone()
            handled = conn.execute("SELECT count(*) FROM workflow_instances WHERE status <> 'active'").fetchone()
    print(f"daemon peak RSS: {peak / 1024:.0f} MB over {arguments.seconds:.0f} s")
    print(f"step runs recorded: {row[0] if row else 0}; enrollments finished: {handled[0] if handled else 0}")


if __name__ == "__main__":
    main()
