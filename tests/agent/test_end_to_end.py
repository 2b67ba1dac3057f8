"""The daemon against the simulator, the scripted Messages API and the Twilio-compatible server.

An estimate created in the simulated tenant reaches the mirror through the
daemon's own incremental sync, enrolls in the estimate follow-up rule,
and two days later the agent texts the customer once. Selling the estimate
stops the enrollment, and nothing more is sent.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import anyio
import psycopg
import pytest

from rulesd.agent import build_executor
from rulesd.agent.addresses import normalize_phone
from rulesd.config import AgentSettings, EngineSettings, MessagingSettings, Settings, SmsSettings, SyncSettings
from rulesd.daemon import Daemon, DaemonOptions
from rulesd.engine.clock import FakeClock
from rulesd.servicetitan.simulator import SimulatorServer
from rulesd.servicetitan.simulator.testing import client_settings, running_simulator
from rulesd.sync.orchestrator import run_sync
from tests.agent.conftest import ledger_rows
from tests.fakes.anthropic_server import AnthropicServer, ErrorReply, Reply, text, tool_use
from tests.fakes.twilio_server import TwilioServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ESTIMATE_RULE = Path(__file__).resolve().parents[2] / "rules" / "estimate-follow-up.yaml"
WAIT = 60.0  # seconds; an upper bound for each wait loop, not a measured latency
SMS_BODY = "Hi, this is Your Company about your furnace estimate. Questions? Just reply. - The team"


def pick_customer(server: SimulatorServer) -> tuple[int, str]:
    """Create customers until one has a textable mobile number and may be serviced; return its id and number."""
    sim = server.sim
    for _ in range(40):
        customer = sim.apply("create_customer")
        index = sim.index_of("customer", customer["id"])
        if customer.get("doNotService"):
            continue
        contacts = [sim.record("customer_contact", child)
                    for child in sim.tables["customer"].children["customer_contact"].of(index)]
        mobiles = [c for c in contacts if c["type"] == "MobilePhone" and not c["phoneSettings"]["doNotText"]]
        if mobiles:
            number = normalize_phone(mobiles[0]["phoneSettings"]["phoneNumber"] or mobiles[0]["value"])
            assert number is not None
            return customer["id"], number
    raise AssertionError("the simulator made no customer with a textable mobile number")


def scripted_model(body: dict[str, Any]) -> Reply | ErrorReply:
    last = body["messages"][-1]["content"]
    if any(isinstance(block, dict) and block.get("type") == "tool_result" for block in last):
        return text("Sent the reminder.")
    return tool_use("send_sms", {"body": SMS_BODY})


def daemon_settings(server: SimulatorServer, anthropic: AnthropicServer, twilio: TwilioServer) -> Settings:
    return Settings(
        servicetitan=client_settings(server),
        sync=dataclasses.replace(SyncSettings(), incremental_interval=timedelta(minutes=30), overlap=timedelta(minutes=2)),
        engine=dataclasses.replace(EngineSettings(), poll_interval=timedelta(hours=1), tick=timedelta(milliseconds=200),
                                   lease=timedelta(seconds=30), shutdown_timeout=timedelta(seconds=5)),
        agent=AgentSettings(api_key="test-key", base_url=anthropic.base_url, max_retries=1),
        messaging=MessagingSettings(dry_run=False),
        sms=SmsSettings(provider="twilio", account_sid=twilio.state.account_sid, auth_token=twilio.state.auth_token,
                        from_number="+15125550000", base_url=twilio.base_url),
    )


async def wait_for(conn: psycopg.AsyncConnection[Any], query: str, params: Any, *,
                   advance: Callable[[], None] | None = None, timeout: float = WAIT) -> Any:
    """Poll ``query`` until it returns a row, calling ``advance`` between polls."""
    with anyio.fail_after(timeout):
        while True:
            row = await (await conn.execute(query, params)).fetchone()
            if row is not None:
                return row
            if advance is not None:
                advance()
            await anyio.sleep(0.2)


async def test_end_to_end_follow_up_sms_once(database_url: str, anthropic_server: AnthropicServer,
                                             twilio_server: TwilioServer) -> None:
    anthropic_server.set_default(scripted_model)
    with running_simulator(seed=11, customers=20) as server:
        settings = daemon_settings(server, anthropic_server, twilio_server)
        await run_sync(settings, database_url, kind="initial")
        customer_id, mobile = pick_customer(server)
        estimate = server.sim.apply("create_estimate", customer_id=customer_id, subtotal=1000, name="New furnace")

        clock = FakeClock()
        executor = build_executor(settings, database_url, dry_run=False)
        daemon = Daemon(settings, database_url, DaemonOptions(
            rules_paths=[ESTIMATE_RULE], executor=executor, clock=clock, handle_signals=False))

        def hour() -> None:
            clock.advance(timedelta(hours=1))

        async with anyio.create_task_group() as group:
            group.start_soon(daemon.run)
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                enrolled = await wait_for(
                    conn, "SELECT id FROM workflow_instances WHERE entity = 'estimate' AND entity_id = %s",
                    (estimate["id"],), advance=hour)
                instance_id = enrolled[0]
                assert twilio_server.messages == []

                # The text step is due two days after enrollment; quiet hours
                # and the business-hours window may push it later.
                await wait_for(
                    conn, "SELECT 1 FROM action_ledger WHERE instance_id = %s AND status = 'sent'", (instance_id,),
                    advance=lambda: clock.advance(timedelta(hours=3)))
                assert [(m.to, m.body) for m in twilio_server.messages] == [(mobile, SMS_BODY)]

                server.sim.apply("sell_estimate", id=estimate["id"])
                stopped = await wait_for(
                    conn, "SELECT stop_reason FROM workflow_instances WHERE id = %s AND status = 'stopped'",
                    (instance_id,), advance=hour)
                assert "Sold" in stopped[0]
                for _ in range(10):
                    clock.advance(timedelta(days=1))
                    await anyio.sleep(0.3)
            daemon.stop()
        await executor.aclose()  # type: ignore[attr-defined]

    assert len(twilio_server.messages) == 1
    rows = ledger_rows(database_url)
    assert [(row["channel"], row["recipient"], row["status"]) for row in rows] == [("sms", mobile, "sent")]
    with psycopg.connect(database_url) as conn:
        enrolled_at = conn.execute("SELECT enrolled_at FROM workflow_instances WHERE id = %s",
                                   (rows[0]["instance_id"],)).fetchone()
    assert enrolled_at is not None
    assert rows[0]["created_at"] - enrolled_at[0] >= timedelta(days=2)
    assert anthropic_server.problems == []
