"""Attacks on the recipient guard: odd phone formats, duplicate contacts, contacts that change mid-step."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable

import psycopg
import pytest

from rulesd.agent import tools
from rulesd.agent.addresses import normalize_phone
from rulesd.agent.recipients import Contact, resolve
from tests.agent.conftest import (
    EMAIL,
    LOCATION_ID,
    MOBILE,
    Harness,
    insert_contact,
    ledger_rows,
    make_request,
    make_rule,
    make_settings,
)
from tests.fakes.anthropic_server import AnthropicServer, Reply, text, tool_use
from tests.fakes.twilio_server import TwilioServer

MakeExecutor = Callable[..., Harness]
BODY = "Hi Pat, a quick follow-up on your AC estimate. Any questions? - The team"


@pytest.mark.parametrize(("raw", "expected"), [
    ("+1 (512) 555-0101", "+15125550101"),
    ("512.555.0101", "+15125550101"),
    ("5125550101", "+15125550101"),
    # A 10-digit international number must not become a +1 number (+1 649 is Turks and Caicos).
    ("+64 9 123 4567", None),
    # An extension's digits must not join the number (this one would become a +51 Peru number).
    ("512-555-0101 x23", None),
    ("+1 512 555 0101 ext. 5", None),
    # Two numbers in one field, and digits from other scripts.
    ("512-555-0101 / 512-555-0102", None),
    ("\u0665\u0661\u0662\u0665\u0665\u0665\u0660\u0661\u0660\u0661", None),
])
def test_normalize_phone_ambiguous_text(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


def _contact(kind: str, value: str, *, owner: str = "customer", contact_id: int = 1, do_not_text: bool = False,
             reminders: bool | None = True) -> Contact:
    address = normalize_phone(value) if kind != "Email" else value.lower()
    return Contact(owner=owner, id=contact_id, type=kind, value=value, address=address, do_not_text=do_not_text,
                   job_reminders_enabled=reminders, marketing_updates_enabled=True)


def test_resolve_do_not_text_on_any_duplicate() -> None:
    contacts = [
        _contact("MobilePhone", "(512) 555-0101", contact_id=1, do_not_text=True),
        _contact("MobilePhone", "512-555-0101", owner="location", contact_id=9),
    ]

    explicit = resolve(contacts, "sms", "+15125550101")
    preferred = resolve(contacts, "sms", None)

    assert explicit.contact is None
    assert "do-not-text" in explicit.refusal
    assert preferred.contact is None


def test_resolve_email_opt_out_on_any_duplicate() -> None:
    contacts = [
        _contact("Email", EMAIL, contact_id=3, reminders=False),
        _contact("Email", EMAIL, owner="location", contact_id=8),
    ]

    assert resolve(contacts, "email", EMAIL.upper()).contact is None
    assert resolve(contacts, "email", None).contact is None


def _change_then_reply(database_url: str, change: str, reply: Reply) -> Callable[[dict[str, Any]], Reply]:
    """Return a script item that runs ``change`` on the mirror while the model writes, then replies."""
    def item(body: dict[str, Any]) -> Reply:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(change)
        return reply
    return item


@pytest.mark.anyio
@pytest.mark.parametrize("change", [
    "UPDATE st_customer_contacts SET active = false WHERE id = 1",
    "UPDATE st_customer_contacts SET missing_since = now() WHERE id = 1",
    "DELETE FROM st_customer_contacts WHERE id = 1",
])
async def test_executor_contact_removed_mid_step(seeded: str, anthropic_server: AnthropicServer,
                                                twilio_server: TwilioServer, make_executor: MakeExecutor,
                                                change: str) -> None:
    anthropic_server.push(_change_then_reply(seeded, change, tool_use("send_sms", {"to": MOBILE, "body": BODY})),
                          text("Could not send."))
    harness = make_executor(make_settings(anthropic_server, twilio_server), seeded)

    result = await harness.executor.execute(make_request(seeded))

    assert twilio_server.messages == []
    assert result.outcome == "failed"
    assert [row["status"] for row in ledger_rows(seeded)] == ["refused"]


@pytest.mark.anyio
async def test_executor_email_opt_out_mid_step(seeded: str, anthropic_server: AnthropicServer,
                                               smtp_server: Any, make_executor: MakeExecutor) -> None:
    controller, mailbox = smtp_server
    change = "UPDATE st_customer_contacts SET job_reminders_enabled = false WHERE id = 3"
    reply = tool_use("send_email", {"subject": "Your estimate", "body": BODY})
    anthropic_server.push(_change_then_reply(seeded, change, reply), text("Could not send."))
    harness = make_executor(make_settings(anthropic_server, smtp=controller), seeded)

    result = await harness.executor.execute(make_request(seeded, rule=make_rule(tools=("send_email",))))

    assert mailbox.messages == []
    assert result.outcome == "failed"


@pytest.mark.anyio
async def test_executor_duplicate_number_do_not_text(seeded: str, anthropic_server: AnthropicServer,
                                                     twilio_server: TwilioServer,
                                                     make_executor: MakeExecutor) -> None:
    # The customer's mobile opts out. Its phone_number is '', so the SQL trigger adds no suppression.
    # The location lists the same number without the flag.
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute("UPDATE st_customer_contacts SET do_not_text = true, phone_number = '' WHERE id = 1")
        conn.execute("DELETE FROM suppressions")
        insert_contact(conn, "st_location_contacts", 9, "location_id", LOCATION_ID, "MobilePhone", "512 555 0101")
    anthropic_server.push(tool_use("send_sms", {"to": MOBILE, "body": BODY}), text("Could not send."))
    harness = make_executor(make_settings(anthropic_server, twilio_server), seeded)

    result = await harness.executor.execute(make_request(seeded))

    assert twilio_server.messages == []
    assert result.outcome == "failed"


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "arguments"), [
    ("send_sms", {"body": 42}),
    ("send_sms", {"to": ["+15125550101"], "body": BODY}),
    ("send_sms", {"body": "x" * 100_000}),
    ("send_sms", {}),
    ("send_fax", {"body": BODY}),
    ("send_sms", {"to": "+1 512 555 0101 ext. 9", "body": BODY}),
])
async def test_executor_malformed_tool_input(seeded: str, anthropic_server: AnthropicServer,
                                             twilio_server: TwilioServer, make_executor: MakeExecutor,
                                             name: str, arguments: dict[str, Any]) -> None:
    anthropic_server.push(tool_use(name, arguments), text("Giving up."))
    harness = make_executor(make_settings(anthropic_server, twilio_server), seeded)

    result = await harness.executor.execute(make_request(seeded))

    assert twilio_server.messages == []
    assert result.outcome == "failed"
    assert any(entry["type"] == "tool_result" and entry["is_error"] for entry in result.transcript)


@pytest.mark.anyio
async def test_executor_cap_holds_for_parallel_steps(seeded: str, anthropic_server: AnthropicServer,
                                                     twilio_server: TwilioServer, make_executor: MakeExecutor,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Two enrollments of one customer reach the tool's cap check together. Each check waits up to
    # a second for the other, which widens the window between the cap check and the ledger write.
    arrived = 0
    both_arrived = asyncio.Event()
    real_check_cap = tools.check_cap

    async def check_cap_together(*args: Any, **kwargs: Any) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_arrived.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both_arrived.wait(), timeout=1)
        return await real_check_cap(*args, **kwargs)

    monkeypatch.setattr(tools, "check_cap", check_cap_together)
    anthropic_server.push(tool_use("send_sms", {"body": BODY}), tool_use("send_sms", {"body": BODY}),
                          text("Done."), text("Done."))
    harness = make_executor(make_settings(anthropic_server, twilio_server, sms_per_day=1), seeded)
    requests = [make_request(seeded, instance_id=instance, step_run_id=instance) for instance in (1, 2)]

    results = await asyncio.gather(*(harness.executor.execute(request) for request in requests))

    assert len(twilio_server.messages) == 1
    assert sorted(result.outcome for result in results) == ["deferred", "done"]
    assert [row["status"] for row in ledger_rows(seeded)] == ["sent"]


@pytest.mark.anyio
@pytest.mark.parametrize("to", ["9" * 5000, "call me at " * 1000, BODY, "a" * 5000 + "@example.com"])
async def test_executor_long_to_rejected(seeded: str, anthropic_server: AnthropicServer, twilio_server: TwilioServer,
                                         make_executor: MakeExecutor, caplog: pytest.LogCaptureFixture,
                                         to: str) -> None:
    anthropic_server.push(tool_use("send_sms", {"to": to, "body": BODY}), text("Could not send."))
    harness = make_executor(make_settings(anthropic_server, twilio_server), seeded)

    result = await harness.executor.execute(make_request(seeded))

    assert twilio_server.messages == []
    assert result.outcome == "failed"
    rows = ledger_rows(seeded)
    assert [row["status"] for row in rows] == ["refused"]
    assert len(rows[0]["recipient"]) <= 100
    assert BODY not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("arguments", [
    {"subject": "Your estimate\u2028Bcc: someone@example.net", "body": BODY},
    {"subject": "Your estimate\x0bBcc: someone@example.net", "body": BODY},
    {"subject": "Your estimate\x85", "body": BODY},
    {"subject": "Your estimate", "body": "Hi Pat \ud800"},
    {"subject": "Your \udc80 estimate", "body": BODY},
])
async def test_executor_email_bad_text_rejected(seeded: str, anthropic_server: AnthropicServer, smtp_server: Any,
                                                make_executor: MakeExecutor, arguments: dict[str, Any]) -> None:
    controller, mailbox = smtp_server
    anthropic_server.push(tool_use("send_email", arguments), text("Could not send."))
    harness = make_executor(make_settings(anthropic_server, smtp=controller), seeded)

    result = await harness.executor.execute(make_request(seeded, rule=make_rule(tools=("send_email",))))

    assert mailbox.messages == []
    assert result.outcome == "failed"
    assert ledger_rows(seeded) == []
    assert any(entry["type"] == "tool_result" and entry["is_error"] for entry in result.transcript)
