"""Simulator benchmark: start-up time, memory held, and records per second served over HTTP.

Run from the repository root with the virtualenv active:

    python benchmarks/simulator_bench.py --scale medium
    python benchmarks/simulator_bench.py --scale small --seconds 5   # a quick check

Steps, all on this machine and on 127.0.0.1:

1. The simulator (``Simulator`` and ``SimulatorServer``, as ``rulesd
   simulator serve`` runs them, with ``--export-page-size`` records per
   export page) starts as a subprocess of this script. Start-up is the time
   until ``/_sim/counts`` responds; memory is the process's resident set
   (``VmRSS``) and its peak (``VmHWM``) from ``/proc``.
2. ``export-cold``: the real ``ServiceTitanClient`` (no page delay, no
   client rate limit) reads the export feeds of customers, locations, jobs,
   appointments, estimates, invoices and payments from the start, spread
   over ``--workers`` concurrent tasks, for ``--seconds``. Every record is
   served for the first time, so the simulator builds it.
3. ``export-warm``: the same feeds again, the same number of pages each, so
   the simulator serves the JSON it cached in step 2.
4. ``export-warm-raw``: the same pages once more over plain HTTP from
   ``--workers`` threads, parsing only each page's envelope: the rate the
   simulator serves, without the client's JSON parsing on the same cores.
5. ``list``: customer list pages of ``--page-size`` records, for ``--seconds``.

Records per second count the records of 200 responses. Because other
work shares the machine, each run also reports the simulator process's
CPU time (user plus system, from ``/proc``) and records per CPU second.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from rulesd.config import ServiceTitanSettings
from rulesd.servicetitan.catalog import ENTITIES
from rulesd.servicetitan.client import ServiceTitanClient
from rulesd.servicetitan.simulator import customers_for_scale

EXPORT_ENTITIES = ("customer", "location", "job", "appointment", "estimate", "invoice", "payment")
STARTUP_TIMEOUT = 300.0  # seconds
SERVER_TIMEOUT = 3600.0  # seconds; the simulator subprocess stops by itself after this


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


def serve(customers: int, port: int, export_page_size: int, timeout: float) -> None:
    """Run the simulator in this process until it is terminated or ``timeout`` passes."""
    from rulesd.servicetitan.simulator import Behaviours, Simulator, SimulatorServer

    behaviours = Behaviours(export_page_size=export_page_size)
    sim = Simulator(seed=1, customers=customers, behaviours=behaviours)
    server = SimulatorServer(sim, "127.0.0.1", port).start()
    try:
        time.sleep(timeout)
    finally:
        server.stop()


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time a process has used, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(
    scale: str, port: int, export_page_size: int
) -> tuple[subprocess.Popen[bytes], float, dict[str, int]]:
    command = [
        sys.executable, __file__, "--serve", "--scale", scale, "--port", str(port),
        "--export-page-size", str(export_page_size),
    ]
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


async def read_exports(
    port: int, workers: int, seconds: float, page_limits: dict[str, int] | None
) -> tuple[dict[str, Any], dict[str, int]]:
    """Read the export feeds from the start; return the run's figures and the pages read per feed.

    Without ``page_limits`` each feed is read until ``seconds`` pass; with
    them, each feed is read for exactly that many pages.
    """
    deadline = time.monotonic() + seconds
    pages_read = {name: 0 for name in EXPORT_ENTITIES}
    async with ServiceTitanClient(settings_for(port)) as client:

        async def worker(number: int) -> None:
            for name in EXPORT_ENTITIES[number::workers]:
                limit = None if page_limits is None else page_limits[name]
                if limit == 0:
                    continue
                async for _ in client.iter_export(ENTITIES[name]):
                    pages_read[name] += 1
                    if limit is None and time.monotonic() >= deadline:
                        return
                    if limit is not None and pages_read[name] >= limit:
                        break

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(workers)))
        elapsed = time.monotonic() - started
        figures = summarize("export-warm" if page_limits else "export-cold", workers, elapsed, client)
    return figures, pages_read


def read_exports_raw(port: int, workers: int, page_limits: dict[str, int]) -> dict[str, Any]:
    """Read the same export pages as ``read_exports`` over plain HTTP, parsing only each envelope.

    This measures what the simulator serves, without the client's JSON
    parsing, which shares this machine's cores with the simulator.
    """
    token = fetch_token(port)
    headers = {"Authorization": f"Bearer {token}", "ST-App-Key": "ak1.simulator"}
    totals = {"pages": 0, "records": 0, "bytes": 0}
    lock = threading.Lock()

    def worker(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for name in EXPORT_ENTITIES[number::workers]:
            entity = ENTITIES[name]
            path = f"/{entity.module}/v2/tenant/1000/{entity.export_path}"
            continue_from = ""
            for _ in range(page_limits[name]):
                query = f"?from={continue_from}" if continue_from else ""
                connection.request("GET", path + query, headers=headers)
                body = connection.getresponse().read()
                envelope = json.loads(body[: body.index(b',"data":[')] + b"}")
                with lock:
                    totals["pages"] += 1
                    totals["bytes"] += len(body)
                continue_from = envelope["continueFrom"]
                if not envelope["hasMore"]:
                    break
        connection.close()

    served_before = server_stats(port)["records"]
    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    totals["records"] = server_stats(port)["records"] - served_before
    return {
        "mode": "export-warm-raw",
        "workers": workers,
        "seconds": round(elapsed, 1),
        "pages": totals["pages"],
        "records": totals["records"],
        "pages_per_second": round(totals["pages"] / elapsed, 1),
        "records_per_second": round(totals["records"] / elapsed),
        "megabytes_per_second": round(totals["bytes"] / elapsed / 1e6, 1),
    }


def server_stats(port: int) -> dict[str, int]:
    """Return the simulator's request counters; ``records`` counts the records it has served."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=30) as response:
        return dict(json.loads(response.read()))


def fetch_token(port: int) -> str:
    form = "grant_type=client_credentials&client_id=cid.simulator&client_secret=cs.simulator-secret"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/connect/token", data=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["access_token"])


async def read_lists(port: int, workers: int, seconds: float, page_size: int) -> dict[str, Any]:
    """Read customer list pages from ``workers`` tasks for ``seconds``."""
    deadline = time.monotonic() + seconds
    async with ServiceTitanClient(settings_for(port)) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                async for _ in client.iter_list(ENTITIES["customer"], page_size=page_size):
                    if time.monotonic() >= deadline:
                        break

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return summarize("list", workers, time.monotonic() - started, client)


def summarize(mode: str, workers: int, elapsed: float, client: ServiceTitanClient) -> dict[str, Any]:
    stats = client.stats
    return {
        "mode": mode,
        "workers": workers,
        "seconds": round(elapsed, 1),
        "pages": stats.requests,
        "records": stats.records,
        "pages_per_second": round(stats.requests / elapsed, 1),
        "records_per_second": round(stats.records / elapsed),
        "megabytes_per_second": round(stats.bytes / elapsed / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="Run time of the cold export run and of the list run, seconds.")
    parser.add_argument("--workers", type=int, default=4, help="Concurrent client tasks.")
    parser.add_argument("--page-size", type=int, default=5000, help="List page size, records.")
    parser.add_argument("--export-page-size", type=int, default=5000,
                        help="Records per export page the simulator sends.")
    parser.add_argument("--output", type=Path, default=None, help="Also write the results as JSON.")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve(customers_for_scale(args.scale), args.port, args.export_page_size, SERVER_TIMEOUT)
        return

    port = free_port()
    process, startup, counts = start_server(args.scale, port, args.export_page_size)
    try:
        after_start = memory_kib(process.pid)
        startup_cpu = cpu_seconds(process.pid)
        runs = []
        pages_read: dict[str, int] = {}
        for step in ("export-cold", "export-warm", "export-warm-raw", "list"):
            cpu_before = cpu_seconds(process.pid)
            if step == "export-cold":
                run, pages_read = asyncio.run(read_exports(port, args.workers, args.seconds, None))
            elif step == "export-warm":
                run, _ = asyncio.run(read_exports(port, args.workers, args.seconds, pages_read))
            elif step == "export-warm-raw":
                run = read_exports_raw(port, args.workers, pages_read)
            else:
                run = asyncio.run(read_lists(port, args.workers, args.seconds, args.page_size))
            server_cpu = cpu_seconds(process.pid) - cpu_before
            run["server_cpu_seconds"] = round(server_cpu, 2)
            run["records_per_server_cpu_second"] = round(run["records"] / server_cpu) if server_cpu else None
            runs.append(run)
        after_runs = memory_kib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)

    result = {
        "scale": args.scale,
        "records": sum(counts.values()),
        "export_page_size": args.export_page_size,
        "startup_seconds": round(startup, 1),
        "startup_cpu_seconds": round(startup_cpu, 1),
        "rss_after_start_mib": round(after_start["VmRSS"] / 1024),
        "rss_after_runs_mib": round(after_runs["VmRSS"] / 1024),
        "peak_rss_mib": round(after_runs["VmHWM"] / 1024),
        "load_average": os.getloadavg()[0],
        "runs": runs,
    }
    print(f"scale {args.scale}: {result['records']:,} records, ready in {result['startup_seconds']} s "
          f"({result['startup_cpu_seconds']} s of CPU), "
          f"RSS {result['rss_after_start_mib']} MiB after start, {result['rss_after_runs_mib']} MiB "
          f"after the runs, peak {result['peak_rss_mib']} MiB, load average {result['load_average']:.1f}")
    for run in runs:
        print(f"  {run['mode']:>15}: {run['pages_per_second']} pages/s, "
              f"{run['records_per_second']:,} records/s, {run['megabytes_per_second']} MB/s "
              f"({run['records']:,} records, {run['workers']} workers, {run['seconds']} s); "
              f"{run['records_per_server_cpu_second'] or 0:,} records per simulator CPU second")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
