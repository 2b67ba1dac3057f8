"""Simulator benchmark: start-up time, memory held, and pages per second served over HTTP.

Run from the repository root with the virtualenv active:

    python benchmarks/simulator_bench.py --scale medium
    python benchmarks/simulator_bench.py --scale small --seconds 5   # a quick check

Steps, all on this machine and on 127.0.0.1:

1. ``rulesd simulator serve`` starts as a subprocess. Start-up is the time
   until ``/_sim/counts`` responds; memory is the process's resident set
   (``VmRSS``) and its peak (``VmHWM``) from ``/proc``.
2. The real ``ServiceTitanClient`` (no page delay, no client rate limit)
   reads export feeds (500 records a page) and customer list pages of
   ``--page-size`` records from ``--workers`` concurrent tasks for
   ``--seconds`` each. Pages per second counts 200 responses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from rulesd.config import ServiceTitanSettings
from rulesd.servicetitan.catalog import ENTITIES
from rulesd.servicetitan.client import ServiceTitanClient

EXPORT_ENTITIES = ("customer", "location", "job", "appointment", "estimate", "invoice", "payment")
STARTUP_TIMEOUT = 300.0  # seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def start_server(scale: str, port: int) -> tuple[subprocess.Popen[bytes], float, dict[str, int]]:
    rulesd = Path(sys.executable).parent / "rulesd"
    command = [str(rulesd), "simulator", "serve", "--scale", scale, "--port", str(port)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/_sim/counts"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"simulator exited with code {process.returncode} before responding")
        if time.monotonic() - started > STARTUP_TIMEOUT:
            process.kill()
            raise SystemExit(f"simulator did not respond within {STARTUP_TIMEOUT:.0f} s")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                counts = json.loads(response.read())
            return process, time.monotonic() - started, counts
        except OSError:
            time.sleep(0.2)


def settings_for(port: int) -> ServiceTitanSettings:
    base = f"http://127.0.0.1:{port}"
    return ServiceTitanSettings(
        tenant_id=1000, client_id="cid.simulator", client_secret="cs.simulator-secret",
        app_key="ak1.simulator", auth_url=base, api_url=base, page_delay=timedelta(0),
        rate_limit=0.0, timeout=timedelta(seconds=120),
    )


async def drive(port: int, mode: str, workers: int, seconds: float, page_size: int) -> dict[str, Any]:
    """Read pages from ``workers`` tasks for ``seconds``; return pages, records and bytes."""
    deadline = time.monotonic() + seconds
    async with ServiceTitanClient(settings_for(port)) as client:

        async def worker(number: int) -> None:
            while time.monotonic() < deadline:
                if mode == "export":
                    entity = ENTITIES[EXPORT_ENTITIES[number % len(EXPORT_ENTITIES)]]
                    pages = client.iter_export(entity)
                else:
                    pages = client.iter_list(ENTITIES["customer"], page_size=page_size)
                async for _ in pages:
                    if time.monotonic() >= deadline:
                        break

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(workers)))
        elapsed = time.monotonic() - started
        stats = client.stats
    return {
        "mode": mode,
        "workers": workers,
        "seconds": round(elapsed, 1),
        "pages": stats.requests,
        "pages_per_second": round(stats.requests / elapsed, 1),
        "records_per_second": round(stats.records / elapsed),
        "megabytes_per_second": round(stats.bytes / elapsed / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--seconds", type=float, default=20.0, help="Run time per mode, seconds.")
    parser.add_argument("--workers", type=int, default=4, help="Concurrent client tasks.")
    parser.add_argument("--page-size", type=int, default=5000, help="List page size.")
    parser.add_argument("--output", type=Path, default=None, help="Also write the results as JSON.")
    args = parser.parse_args()

    port = free_port()
    process, startup, counts = start_server(args.scale, port)
    try:
        after_start = memory_kib(process.pid)
        runs = [
            asyncio.run(drive(port, "export", args.workers, args.seconds, args.page_size)),
            asyncio.run(drive(port, "list", args.workers, args.seconds, args.page_size)),
        ]
        after_runs = memory_kib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)

    result = {
        "scale": args.scale,
        "records": sum(counts.values()),
        "startup_seconds": round(startup, 1),
        "rss_after_start_mib": round(after_start["VmRSS"] / 1024),
        "rss_after_runs_mib": round(after_runs["VmRSS"] / 1024),
        "peak_rss_mib": round(after_runs["VmHWM"] / 1024),
        "load_average": os.getloadavg()[0],
        "runs": runs,
    }
    print(f"scale {args.scale}: {result['records']:,} records, ready in {result['startup_seconds']} s, "
          f"RSS {result['rss_after_start_mib']} MiB after start, {result['rss_after_runs_mib']} MiB "
          f"after the runs, peak {result['peak_rss_mib']} MiB")
    for run in runs:
        print(f"  {run['mode']:>6}: {run['pages_per_second']} pages/s, "
              f"{run['records_per_second']:,} records/s, {run['megabytes_per_second']} MB/s "
              f"({run['workers']} workers, {run['seconds']} s)")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
