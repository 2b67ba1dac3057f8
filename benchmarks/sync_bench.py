"""Sync benchmark: rulesd sync --initial and an incremental sync against the simulator, and a peer loader.

Run from the repository root:

    python benchmarks/sync_bench.py --scale medium
    python benchmarks/sync_bench.py --scale small --peer none   # a quick check

Every process runs on this machine and every server listens on 127.0.0.1:

1. The simulator serves a generated tenant (``medium``: 50,000 customers,
   about 1.2 million records) in its own process with no page delay and
   no rate limit. Before each measured step it serializes every record
   into its JSON cache (``Simulator.warm_cache``), so its own record
   generation is not measured.
2. ``rulesd sync --initial --json`` runs as a subprocess into a fresh
   database. Records per second use the sync's own run time from its
   summary (first request to last commit). The process time, which adds
   interpreter start-up and imports, is shown beside it, and ``wait4``
   gives the process's peak resident memory.
3. The simulator applies random changes until 1% of its records have
   changed (``--changed-share``), and ``rulesd sync`` runs incrementally.
4. The peer, dlt's REST API source, loads the same tenant (with those
   changes) into another schema of the same database in its own
   subprocess, measured the same way.

Beside each rulesd step it reads the CPU seconds of the sync process, the
simulator and the Postgres server (when the server runs on this machine),
and how many cores were busy, from ``/proc``.

The results are printed as a table and, with ``--output FILE``, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from cpu_time import CpuMeter, CpuShare

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SIMULATOR_TIMEOUT = 7200.0  # seconds; the simulator process stops by itself after this
STEP_TIMEOUT = 3600  # seconds allowed for one measured step
DEFAULT_CHANGED_SHARE = 0.01  # share of records changed before the incremental sync


@dataclass
class Measurement:
    """One measured step: its time, the records it moved and the peak memory of its process.

    ``seconds`` runs from the first request to the last commit, as the
    tool reports it. ``process_seconds`` is the whole subprocess, including
    interpreter start-up and imports.
    """

    step: str
    seconds: float
    records: int
    peak_rss_mb: float
    process_seconds: float
    detail: str = ""
    process_cpu_seconds: float | None = None
    cpu: CpuShare | None = None

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


# -- the simulator process


def serve_simulator(customers: int, seed: int) -> None:
    """Serve a tenant until standard input closes, answering one JSON line per command.

    It prints its address and counts first. Commands on standard input:
    ``warm`` serializes every record into the simulator's JSON cache, and
    ``change SHARE`` applies random changes until that share of the records
    (0.01 for 1%) has changed, counting a record once however many changes
    touch it, and serializes the records they changed. The server builds each export page by joining cached record
    JSON, so the measured steps do not pay for the simulator's record
    generation.
    """
    from rulesd.servicetitan.simulator import Simulator, serve_simulator as serve

    sim = Simulator(seed=seed, customers=customers)
    with serve(sim, timeout=SIMULATOR_TIMEOUT) as server:
        details = {
            "base_url": server.base_url,
            "tenant_id": server.tenant_id,
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "app_key": server.app_key,
            "counts": sim.counts(),
        }
        print(json.dumps(details), flush=True)
        rng = random.Random(seed)
        for line in sys.stdin:
            words = line.split()
            if words == ["warm"]:
                print(json.dumps({"built": sim.warm_cache()}), flush=True)
            elif words[:1] == ["change"]:
                target = float(words[1]) * sum(sim.counts().values())
                applied, changed = apply_changes(sim, rng, target)
                built = sim.warm_cache()
                result = {"applied": applied, "changed": changed, "built": built, "counts": sim.counts()}
                print(json.dumps(result), flush=True)


def apply_changes(sim: Any, rng: random.Random, target: float) -> tuple[int, int]:
    """Apply random changes until ``target`` distinct records changed; return (changes, records changed).

    A change appends each record it creates or modifies to its table's
    export log, so the new log entries name the changed records. One change
    can touch several records: completing a job also changes its invoice
    and its customer.
    """
    from rulesd.servicetitan.simulator.changes import random_change

    positions = {name: len(table.order_index) for name, table in sim.tables.items()}
    changed: set[tuple[str, int]] = set()
    applied = 0
    while len(changed) < target:
        picked = random_change(sim, rng)
        if picked is None:
            continue
        sim.apply(picked[0], **picked[1])
        applied += 1
        for name, table in sim.tables.items():
            log = table.order_index
            changed.update((name, index) for index in log[positions[name] :])
            positions[name] = len(log)
    return applied, len(changed)


class SimulatorProcess:
    """The simulator running in a child process."""

    def __init__(self, customers: int, seed: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-simulator", "--customers", str(customers), "--seed", str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.details: dict[str, Any] = json.loads(self.process.stdout.readline())

    def command(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        result: dict[str, Any] = json.loads(self.process.stdout.readline())
        return result

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- measured subprocesses


def run_measured(command: list[str], env: dict[str, str], step: str) -> tuple[float, float, float, str]:
    """Run ``command``; return its wall seconds, its peak RSS in MB, its CPU seconds and its standard output."""
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=errors, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        errors.seek(0)
        stdout = output.read().decode()
        stderr = errors.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{step} failed with exit code {process.returncode}:\n{stderr[-4000:]}")
    peak_mb = usage.ru_maxrss / 1024  # ru_maxrss is in kilobytes on Linux
    return seconds, peak_mb, usage.ru_utime + usage.ru_stime, stdout


def rulesd_env(details: dict[str, Any], database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RULESD_DATABASE_URL": database_url,
            "SERVICE_TITAN_TENANT_ID": str(details["tenant_id"]),
            "SERVICE_TITAN_CLIENT_ID": details["client_id"],
            "SERVICE_TITAN_CLIENT_SECRET": details["client_secret"],
            "SERVICE_TITAN_APP_KEY": details["app_key"],
            "SERVICE_TITAN_AUTH_URL": details["base_url"],
            "SERVICE_TITAN_API_URL": details["base_url"],
        }
    )
    return env


def write_config(directory: Path, concurrency: int) -> Path:
    path = directory / "rulesd.yaml"
    path.write_text(
        "servicetitan:\n  page_delay: 0\n  rate_limit: 0\n  page_size: 5000\n"
        f"sync:\n  batch_size: 5000\n  concurrency: {concurrency}\n"
        "logging:\n  level: warning\n",
        encoding="utf-8",
    )
    return path


def rulesd_sync(
    config: Path, env: dict[str, str], meter: CpuMeter, step: str, *options: str
) -> tuple[Measurement, dict[str, Any]]:
    command = [sys.executable, "-c", "from rulesd.cli import main; main()", "--config", str(config)]
    command += ["sync", "--json", "--no-migrate", *options]
    before = meter.read()
    process_seconds, peak_mb, cpu_seconds, stdout = run_measured(command, env, step)
    cpu = meter.share(before, meter.read())
    summary: dict[str, Any] = json.loads(stdout)
    records = summary["fetched"] if options == ("--initial",) else summary["created"] + summary["updated"]
    detail = f"fetched {summary['fetched']:,}, created {summary['created']:,}, updated {summary['updated']:,}"
    measurement = Measurement(step, summary["seconds"], records, peak_mb, process_seconds, detail, cpu_seconds, cpu)
    return measurement, summary


# -- the database


def create_database(server_url: str) -> tuple[str, str]:
    name = f"rulesd_syncbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    # A URL rather than a key=value string, because dlt accepts only URLs.
    return name, urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def mirror_counts(database_url: str) -> dict[str, int]:
    from rulesd.servicetitan.catalog import ENTITY_LIST

    with psycopg.connect(database_url) as conn:
        counts = {}
        for entity in ENTITY_LIST:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(entity.table))).fetchone()
            assert row is not None
            counts[entity.name] = int(row[0])
    return counts


def event_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM workflow_events").fetchone()
    assert row is not None
    return int(row[0])


# -- the run


def benchmark(arguments: argparse.Namespace) -> list[Measurement]:
    from rulesd.db import migrate

    from rulesd.servicetitan.simulator import customers_for_scale

    customers = arguments.customers or customers_for_scale(arguments.scale)
    simulator = SimulatorProcess(customers, arguments.seed)
    name, database_url = create_database(arguments.database_url)
    measurements: list[Measurement] = []
    try:
        details = simulator.details
        total = sum(details["counts"].values())
        print(f"simulator: {total:,} records at {details['base_url']}", flush=True)
        migrate.upgrade(database_url)
        env = rulesd_env(details, database_url)
        with tempfile.TemporaryDirectory() as directory:
            config = write_config(Path(directory), arguments.concurrency)
            meter = CpuMeter(simulator.process.pid, database_url)

            warmed = simulator.command("warm")
            print(f"serialized {warmed['built']:,} records into the simulator cache", flush=True)
            initial, _ = rulesd_sync(config, env, meter, "rulesd initial sync", "--initial")
            measurements.append(initial)
            print_measurement(initial)
            if mirror_counts(database_url) != details["counts"]:
                raise SystemExit("mirror counts differ from the simulator's after the initial sync")
            if event_count(database_url):
                raise SystemExit("the initial sync wrote change events")

            applied = simulator.command(f"change {arguments.changed_share}")
            incremental, _ = rulesd_sync(config, env, meter, "rulesd incremental sync")
            incremental.detail += f"; {applied['applied']:,} random changes to {applied['changed']:,} records"
            measurements.append(incremental)
            print_measurement(incremental)
            if mirror_counts(database_url) != applied["counts"]:
                raise SystemExit("mirror counts differ from the simulator's after the incremental sync")

            if arguments.peer == "dlt":
                # Same tenant, another schema of the same database. It runs last
                # because its 1.2 million fresh rows leave the server busy with
                # checkpoints and vacuum, which slowed a following incremental
                # sync by about a third.
                peer = run_dlt_peer(details, database_url, sum(applied["counts"].values()))
                measurements.append(peer)
                print_measurement(peer)
    finally:
        simulator.stop()
        if not arguments.keep_database:
            drop_database(arguments.database_url, name)
    return measurements


def run_dlt_peer(details: dict[str, Any], database_url: str, total: int) -> Measurement:
    command = [sys.executable, str(REPO / "benchmarks" / "sync_peer_dlt.py"), "--database-url", database_url]
    env = dict(os.environ, SIMULATOR_DETAILS=json.dumps(details))
    process_seconds, peak_mb, cpu_seconds, stdout = run_measured(command, env, "dlt")
    loaded = json.loads(stdout.strip().splitlines()[-1])
    detail = f"loaded {loaded['records']:,} of {total:,}"
    step = "dlt rest_api initial load"
    return Measurement(step, loaded["seconds"], loaded["records"], peak_mb, process_seconds, detail, cpu_seconds)


def print_measurement(measurement: Measurement) -> None:
    print(
        f"{measurement.step:<28} {measurement.seconds:8.1f} s {measurement.records:>10,} records "
        f"{measurement.records_per_second:>9,.0f} rec/s  peak {measurement.peak_rss_mb:6.0f} MB  "
        f"process {measurement.process_seconds:.1f} s  {measurement.detail}",
        flush=True,
    )
    if measurement.cpu is not None:
        print(f"{'':<28} {measurement.cpu.describe()}, sync process {measurement.process_cpu_seconds:.1f} s", flush=True)


def summarise(measurements: list[Measurement]) -> dict[str, Any]:
    by_step = {m.step: m for m in measurements}
    initial = by_step["rulesd initial sync"]
    incremental = by_step["rulesd incremental sync"]
    summary: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "measurements": [dict(asdict(m), records_per_second=round(m.records_per_second)) for m in measurements],
        "incremental_share_of_initial": round(incremental.seconds / initial.seconds, 4),
    }
    peer = by_step.get("dlt rest_api initial load")
    if peer is not None:
        summary["speedup_over_peer"] = round(initial.records_per_second / max(peer.records_per_second, 1e-9), 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="medium", help="simulator tenant size: small, medium or large")
    parser.add_argument("--customers", type=int, help="simulator tenant size in customers; overrides --scale")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=os.environ.get("RULESD_BENCH_DATABASE_URL", DEFAULT_SERVER_URL),
                        help="Postgres server to create the benchmark database on")
    parser.add_argument("--concurrency", type=int, default=4, help="entities synced at once")
    parser.add_argument("--peer", choices=["dlt", "none"], default="dlt")
    parser.add_argument("--changed-share", type=float, default=DEFAULT_CHANGED_SHARE,
                        help="share of records changed before the incremental sync (0.01 is 1%%)")
    parser.add_argument("--output", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--serve-simulator", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()

    if arguments.serve_simulator:
        serve_simulator(arguments.customers, arguments.seed)
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    measurements = benchmark(arguments)
    summary = summarise(measurements)
    print(json.dumps(summary, indent=2))
    if arguments.output:
        arguments.output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
