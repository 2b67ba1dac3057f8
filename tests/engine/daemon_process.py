"""Run a daemon in its own process for reliability tests: ``python -m tests.engine.daemon_process URL RULES``.

Its executor records every call in the table ``test_step_calls`` (created
by the test) and can sleep first, so a test can kill the process while a
step runs.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path

import anyio
import psycopg

from rulesd.daemon import Daemon, DaemonOptions
from rulesd.engine.executor import StepRequest, StepResult
from rulesd.logs import configure_logging
from tests.engine.conftest import fast_settings


class CallRecordingExecutor:
    """Inserts one ``test_step_calls`` row per call, then sleeps ``step_seconds``."""

    def __init__(self, database_url: str, step_seconds: float) -> None:
        self._url = database_url
        self._step_seconds = step_seconds

    async def execute(self, request: StepRequest) -> StepResult:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO test_step_calls (instance_id, step, attempt, pid) VALUES (%s, %s, %s, %s)",
                (request.instance_id, request.step.name, request.attempt, os.getpid()),
            )
        await anyio.sleep(self._step_seconds)
        return StepResult(outcome="done", detail=f"recorded by process {os.getpid()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("rules", type=Path)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--max-concurrent-steps", type=int, default=16)
    parser.add_argument("--flood-limit", type=int, default=100_000)
    arguments = parser.parse_args()

    configure_logging("info", "text")
    settings = fast_settings(
        lease=timedelta(seconds=arguments.lease),
        max_concurrent_steps=arguments.max_concurrent_steps,
        flood_limit=arguments.flood_limit,
        tick=timedelta(milliseconds=200),
    )
    executor = CallRecordingExecutor(arguments.database_url, arguments.step_seconds)
    options = DaemonOptions(rules_paths=[arguments.rules], sync=False, executor=executor)
    anyio.run(Daemon(settings, arguments.database_url, options).run, backend="asyncio")


if __name__ == "__main__":
    main()
