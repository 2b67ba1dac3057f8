"""A process killed between the ledger write and the provider call never causes a second message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.agent.conftest import MOBILE, Harness, ledger_rows, make_request, make_settings
from tests.fakes.anthropic_server import AnthropicServer, tool_use
from tests.fakes.twilio_server import TwilioServer

pytestmark = pytest.mark.anyio

REPOSITORY = Path(__file__).resolve().parents[2]
MARKER_TIMEOUT = 60.0  # seconds


def run_until_provider(database_url: str, anthropic_url: str, marker: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent.step_until_provider", database_url, anthropic_url, str(marker)],
        cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def wait_for(marker: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + MARKER_TIMEOUT
    while not marker.exists():
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the step process exited early:\n{stderr.decode()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the step process never reached the provider call")
        time.sleep(0.05)


async def test_crash_leaves_unknown_row_and_no_resend(
    seeded: str, anthropic_server: AnthropicServer, twilio_server: TwilioServer,
    make_executor: Callable[..., Harness], tmp_path: Path,
) -> None:
    anthropic_server.push(tool_use("send_sms", {"body": "Hi Pat, about your estimate."}))
    marker = tmp_path / "provider-called"
    process = run_until_provider(seeded, anthropic_server.base_url, marker)
    try:
        wait_for(marker, process)
    finally:
        process.kill()
        process.communicate(timeout=30)

    assert [row["status"] for row in ledger_rows(seeded)] == ["pending"]

    anthropic_server.set_default(tool_use("send_sms", {"body": "Hi Pat, about your estimate."}))
    harness = make_executor(make_settings(anthropic_server, twilio_server), seeded)
    restarted = await harness.executor.execute(make_request(seeded, step_run_id=2, attempt=2))
    again = await harness.executor.execute(make_request(seeded, step_run_id=3, attempt=3))

    rows = ledger_rows(seeded)
    assert len(rows) == 1
    assert rows[0]["status"] == "unknown"
    assert rows[0]["recipient"] == MOBILE
    assert restarted.outcome == "failed"
    assert "unknown outcome" in restarted.detail
    assert again.outcome == "failed"
    assert twilio_server.messages == []
    assert len(anthropic_server.requests) == 1
