"""Run one SMS step in a child process and stop inside the provider call until killed.

Used by the crash test: ``python -m tests.agent.step_until_provider
DATABASE_URL ANTHROPIC_URL MARKER_FILE``. The SMS provider writes
``MARKER_FILE`` when it is called, after the ledger row was committed,
then waits; the test kills the process at that point.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from rulesd.agent import ClaudeExecutor
from rulesd.agent.claude import ModelClient
from rulesd.agent.providers import Delivery
from rulesd.agent.tools import Providers
from rulesd.config import AgentSettings, MessagingSettings, Settings
from tests.agent.conftest import make_request

WAIT_LIMIT = 60.0  # seconds; the process exits by itself if nobody kills it


class StallingSms:
    name = "twilio"

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    async def send_sms(self, to: str, body: str) -> Delivery:
        self.marker.write_text(to)
        time.sleep(WAIT_LIMIT)
        raise SystemExit("the test did not kill the process")


async def main(database_url: str, anthropic_url: str, marker: Path) -> None:
    settings = Settings(agent=AgentSettings(api_key="test-key", base_url=anthropic_url, max_retries=0),
                        messaging=MessagingSettings(dry_run=False))
    executor = ClaudeExecutor(settings, database_url, dry_run=False, model=ModelClient(settings.agent),
                              providers=Providers(sms=StallingSms(marker)))
    await executor.execute(make_request(database_url))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], Path(sys.argv[3]))
