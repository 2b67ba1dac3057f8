"""CPU time of the processes a benchmark step runs on: the simulator, the Postgres server and the machine.

On a 2-core machine the rate of a sync is set by how the two cores are
shared between the simulator, rulesd and Postgres. These readings show
where the time went. They come from ``/proc`` and work only for processes
on this machine; a remote Postgres server reads as ``None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psycopg

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int, *, children: bool = False) -> float | None:
    """Return the user and system CPU seconds of ``pid``, plus its waited-for children's with ``children``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may contain spaces, so fields are counted from after it.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    ticks = utime + stime + (cutime + cstime if children else 0)
    return ticks / CLOCK_TICKS


def postmaster_pid(database_url: str) -> int | None:
    """Return the pid of the Postgres server's main process, or None when it is not on this machine."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        # Read while connected: the backend process exits when the connection closes.
        try:
            text = Path(f"/proc/{row[0]}/stat").read_text()
        except OSError:
            return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def server_seconds(postmaster: int) -> float | None:
    """Return the CPU seconds of a Postgres server: its main process, its live children and those that exited."""
    total = process_seconds(postmaster, children=True)
    if total is None:
        return None
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        total += process_seconds(int(child)) or 0.0
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """Return (busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + values[4]  # idle and iowait
    total = sum(values[:8])  # guest time is already counted in user time
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class Reading:
    simulator: float | None
    postgres: float | None
    machine_busy: float
    machine_total: float


@dataclass
class CpuShare:
    """CPU seconds spent during one step, by process, and how busy the cores were."""

    simulator: float | None
    postgres: float | None
    cores_busy: float

    def describe(self) -> str:
        parts = []
        if self.simulator is not None:
            parts.append(f"simulator {self.simulator:.1f} s")
        if self.postgres is not None:
            parts.append(f"postgres {self.postgres:.1f} s")
        parts.append(f"cores busy {self.cores_busy:.2f} of {os.cpu_count()}")
        return "CPU: " + ", ".join(parts)


class CpuMeter:
    """Reads the simulator's and the Postgres server's CPU time before and after a step."""

    def __init__(self, simulator_pid: int, database_url: str) -> None:
        self.simulator_pid = simulator_pid
        self.postmaster = postmaster_pid(database_url)

    def read(self) -> Reading:
        busy, total = machine_busy_seconds()
        postgres = server_seconds(self.postmaster) if self.postmaster is not None else None
        return Reading(process_seconds(self.simulator_pid), postgres, busy, total)

    @staticmethod
    def share(before: Reading, after: Reading) -> CpuShare:
        def delta(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else b - a

        elapsed = (after.machine_total - before.machine_total) / (os.cpu_count() or 1)
        busy = after.machine_busy - before.machine_busy
        return CpuShare(
            simulator=delta(before.simulator, after.simulator),
            postgres=delta(before.postgres, after.postgres),
            cores_busy=busy / elapsed if elapsed > 0 else 0.0,
        )
