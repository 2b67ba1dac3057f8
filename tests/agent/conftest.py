"""Fixtures for agent tests: the scripted Messages API, a Twilio-compatible server, an SMTP server,
mirror rows for one customer, and a helper that builds step requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable, Iterator

import socket

import psycopg
import pytest
from aiosmtpd.controller import Controller
from psycopg.types.json import Jsonb

from rulesd.agent import ClaudeExecutor, build_providers
from rulesd.agent.claude import ModelClient
from rulesd.config import AgentSettings, EmailSettings, MessagingSettings, Settings, SmsSettings
from rulesd.engine.executor import StepRequest
from rulesd.rules.model import EvalContext, Enroll, Rule, Step, Trigger
from tests.fakes.anthropic_server import AnthropicServer
from tests.fakes.twilio_server import TwilioServer

CUSTOMER_ID = 1001
LOCATION_ID = 2001
MOBILE = "+15125550101"
LANDLINE = "+15125550102"
EMAIL = "pat.lee@example.com"
# 2026-03-10 15:00 UTC is 10:00 in Austin (CDT), inside sending hours.
DAYTIME = datetime(2026, 3, 10, 15, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FixedTemplate:
    source: str
    aliases: frozenset[str] = frozenset()

    def render(self, context: EvalContext) -> str:
        return self.source


@pytest.fixture
def anyio_backend() -> str:
    # psycopg's async API needs asyncio.
    return "asyncio"


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    server = AnthropicServer(lifetime=120).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def twilio_server() -> Iterator[TwilioServer]:
    server = TwilioServer(lifetime=120).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    # aiosmtpd's Controller connects to its own port to see that it is ready, so port 0 cannot be used.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Mailbox:
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, Mailbox]]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    controller.start()
    try:
        yield controller, mailbox
    finally:
        controller.stop()


def make_settings(
    anthropic: AnthropicServer,
    twilio: TwilioServer | None = None,
    smtp: Controller | None = None,
    **messaging: Any,
) -> Settings:
    sms = SmsSettings()
    if twilio is not None:
        sms = SmsSettings(provider="twilio", account_sid=twilio.state.account_sid, auth_token=twilio.state.auth_token,
                          from_number="+15125550000", base_url=twilio.base_url)
    email = EmailSettings()
    if smtp is not None:
        email = EmailSettings(provider="smtp", host="127.0.0.1", port=smtp.port,
                              security="none", from_address="office@example.com", from_name="Lone Star Air")
    return Settings(
        agent=AgentSettings(api_key="test-key", base_url=anthropic.base_url, max_retries=3, max_turns=4,
                            timeout=timedelta(seconds=10)),
        messaging=MessagingSettings(dry_run=False, **messaging),
        sms=sms,
        email=email,
    )


@dataclass
class Harness:
    """An executor wired to the fakes, with the model client's sleeps recorded instead of slept."""

    executor: ClaudeExecutor
    sleeps: list[float]


@pytest.fixture
async def make_executor() -> AsyncIterator[Callable[..., Harness]]:
    """Return a factory of harnesses; their HTTP clients are closed after the test."""
    built: list[Harness] = []

    def factory(settings: Settings, database_url: str, *, dry_run: bool = False) -> Harness:
        harness = build_harness(settings, database_url, dry_run=dry_run)
        built.append(harness)
        return harness

    yield factory
    for harness in built:
        await harness.executor.aclose()


def build_harness(settings: Settings, database_url: str, *, dry_run: bool = False) -> Harness:
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    executor = ClaudeExecutor(settings, database_url, dry_run=dry_run,
                              model=ModelClient(settings.agent, sleep=record_sleep),
                              providers=build_providers(settings))
    return Harness(executor, sleeps)


def make_rule(tools: tuple[str, ...] = ("send_sms",), action: str = "Text the customer a friendly reminder "
              "about their estimate and offer to answer questions.") -> Rule:
    step = Step(name="remind", after=timedelta(days=2), action=FixedTemplate(action), tools=tools)
    return Rule(id="estimate-follow-up", trigger=Trigger(entity="estimate", kind="created"),
                enroll=Enroll(key_alias="estimate"), steps=(step,))


def make_request(
    database_url: str,
    *,
    rule: Rule | None = None,
    now: datetime = DAYTIME,
    step_run_id: int = 1,
    attempt: int = 1,
    instance_id: int = 1,
    rows: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> StepRequest:
    rule = rule or make_rule()
    step = rule.steps[0]
    rows = rows if rows is not None else {
        "estimate": {"id": 5001, "name": "Replace AC condenser", "status": "Open", "total": "7450.00"},
        "customer": {"id": CUSTOMER_ID, "name": "Pat Lee"},
    }
    return StepRequest(
        instance_id=instance_id, step_run_id=step_run_id, attempt=attempt, rule=rule, step=step,
        action=step.action.render(EvalContext(rows={}, now=now)), context=EvalContext(rows=rows, now=now),
        entity="estimate", entity_id=5001, customer_id=CUSTOMER_ID, location_id=LOCATION_ID, dry_run=dry_run,
        database_url=database_url,
    )


def insert_contact(conn: psycopg.Connection, table: str, contact_id: int, owner_column: str, owner_id: int,
                   kind: str, value: str, **flags: Any) -> None:
    conn.execute(
        f"INSERT INTO {table} (id, {owner_column}, type, value, do_not_text, job_reminders_enabled,"
        " marketing_updates_enabled, active, raw) VALUES (%s, %s, %s, %s, %s, %s, %s, true, %s)",
        (contact_id, owner_id, kind, value, flags.get("do_not_text", False), flags.get("job_reminders", True),
         flags.get("marketing", True), Jsonb({"id": contact_id})),
    )


def seed_customer(database_url: str, *, name: str = "Pat Lee", state: str = "TX") -> None:
    """Insert one customer in Austin with a mobile, a landline and an e-mail address."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO st_customers (id, name, address_state, raw) VALUES (%s, %s, %s, %s)",
                     (CUSTOMER_ID, name, state, Jsonb({"id": CUSTOMER_ID, "name": name})))
        conn.execute("INSERT INTO st_locations (id, customer_id, name, address_city, address_state, raw)"
                     " VALUES (%s, %s, %s, 'Austin', %s, %s)",
                     (LOCATION_ID, CUSTOMER_ID, name, state, Jsonb({"id": LOCATION_ID})))
        insert_contact(conn, "st_customer_contacts", 1, "customer_id", CUSTOMER_ID, "MobilePhone", "(512) 555-0101")
        insert_contact(conn, "st_customer_contacts", 2, "customer_id", CUSTOMER_ID, "Phone", "512-555-0102")
        insert_contact(conn, "st_customer_contacts", 3, "customer_id", CUSTOMER_ID, "Email", EMAIL)


def ledger_rows(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        cur.execute("SELECT * FROM action_ledger ORDER BY id")
        return cur.fetchall()


@pytest.fixture
def seeded(database_url: str) -> str:
    seed_customer(database_url)
    return database_url


Factory = Callable[..., StepRequest]
