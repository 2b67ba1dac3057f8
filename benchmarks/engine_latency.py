"""Measure commit-to-enrollment latency through LISTEN/NOTIFY with a running daemon.

Starts the daemon in-process (recording executor, system clock, the
default 30 s poll), then commits ``--count`` estimates one by one, a few
milliseconds apart. Each enrollment's latency is ``enrolled_at`` minus the
event's ``occurred_at``, both read from the database's clock, so the
measurement adds no polling delay of its own.

    python benchmarks/engine_latency.py [--database-url URL] [--count 500]

Without a URL it starts an embedded Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import anyio
import psycopg

from benchmarks.engine_common import bench_settings, insert_customer, percentile, scratch_database
from rulesd.daemon import Daemon, DaemonOptions
from rulesd.engine.executor import RecordingExecutor

RULE = Path(__file__).resolve().parents[1] / "rules" / "estimate-follow-up.yaml"


async def measure(url: str, count: int, gap: float) -> list[float]:
    daemon = Daemon(
        bench_settings(),
        url,
        DaemonOptions(rules_paths=[RULE], sync=False, executor=RecordingExecutor(), handle_signals=False),
    )
    async with anyio.create_task_group() as group:
        group.start_soon(daemon.run)
        while daemon.ready is None or daemon.listener is None or daemon.listener.state != "listening":
            await anyio.sleep(0.01)
        # The commits run in a worker thread, off the daemon's event loop.
        rows = await anyio.to_thread.run_sync(commit_and_collect, url, count, gap)
        daemon.stop()
    return [float(row[0]) * 1000 for row in rows]


def commit_and_collect(url: str, count: int, gap: float) -> list[tuple[float]]:
    with psycopg.connect(url, autocommit=True) as conn:
        insert_customer(conn, 1)
        for estimate_id in range(1, count + 1):
            conn.execute(
                "INSERT INTO st_estimates (id, customer_id, status, subtotal, tax, raw) VALUES (%s, 1, 'Open', 900, 0, %s)",
                (estimate_id, json.dumps({"id": estimate_id})),
            )
            time.sleep(gap)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM workflow_instances").fetchone()
            if row and row[0] >= count:
                break
            time.sleep(0.05)
        return conn.execute(
            """
            SELECT extract(epoch FROM i.enrolled_at - e.occurred_at)
              FROM workflow_instances i JOIN workflow_events e ON e.id = i.event_id
            """
        ).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="Postgres server to create the scratch database on")
    parser.add_argument("--count", type=int, default=500, help="estimates to commit (default 500)")
    parser.add_argument("--gap", type=float, default=0.005, help="seconds between commits (default 0.005)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with scratch_database(arguments.database_url) as url:
        latencies = anyio.run(measure, url, arguments.count, arguments.gap, backend="asyncio")
    print(f"enrollments: {len(latencies)} of {arguments.count}")
    for label, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        print(f"{label}: {percentile(latencies, fraction):.1f} ms")


if __name__ == "__main__":
    main()
