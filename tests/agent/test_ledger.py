"""The action ledger's keys and the frequency caps that read it, against Postgres."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from rulesd.agent import ledger
from rulesd.agent.caps import check_cap
from rulesd.config import MessagingSettings

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=timezone.utc)
INTENT = ledger.Intent(instance_id=1, step_run_id=1, attempt=1, rule_id="r", step_name="text", channel="sms",
                       recipient="+15125550101", customer_id=7, location_id=None, body="Hello", subject=None,
                       created_at=NOW)


async def test_ledger_second_recipient_same_channel_blocked(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first = await ledger.reserve(conn, INTENT, status="pending", provider="twilio")
        second = await ledger.reserve(conn, replace(INTENT, recipient="+15125550102"), status="pending",
                                      provider="twilio")

    assert first.reserved is True
    assert second.reserved is False
    assert second.entry is not None
    assert second.entry.recipient == "+15125550101"


async def test_ledger_failed_row_is_reused(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first = await ledger.reserve(conn, INTENT, status="pending", provider="twilio")
        assert first.entry is not None
        await ledger.mark_failed(conn, first.entry.id, "Twilio returned HTTP 503")
        again = await ledger.reserve(conn, replace(INTENT, step_run_id=2, attempt=2), status="pending",
                                     provider="twilio")

    assert again.reserved is True
    assert again.entry is not None
    assert again.entry.id == first.entry.id
    assert again.entry.step_run_id == 2
    assert again.entry.error is None


async def test_ledger_refusal_leaves_sent_row(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first = await ledger.reserve(conn, INTENT, status="pending", provider="twilio")
        assert first.entry is not None
        await ledger.mark_sent(conn, first.entry.id, "SM1", NOW)
        await ledger.record_refusal(conn, INTENT, "suppressed")
        entries = await ledger.step_entries(conn, 1, "text")

    assert [(entry.status, entry.provider_id, entry.error) for entry in entries] == [("sent", "SM1", None)]


async def test_ledger_channels_are_independent(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        sms = await ledger.reserve(conn, INTENT, status="dry_run", provider=None)
        email = await ledger.reserve(conn, replace(INTENT, channel="email", recipient="pat@example.com",
                                                   subject="Hi"), status="dry_run", provider=None)

    assert sms.reserved is True
    assert email.reserved is True


async def test_caps_rolling_day_window(database_url: str) -> None:
    settings = MessagingSettings(sms_per_day=2, sms_per_week=10)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for hours_ago, instance in ((30, 1), (20, 2), (5, 3)):
            intent = replace(INTENT, instance_id=instance, created_at=NOW - timedelta(hours=hours_ago))
            await ledger.reserve(conn, intent, status="pending", provider="twilio")

        check = await check_cap(conn, settings, 7, "sms", NOW, dry_run=False)
        other_customer = await check_cap(conn, settings, 8, "sms", NOW, dry_run=False)
        email = await check_cap(conn, settings, 7, "email", NOW, dry_run=False)

    assert check.allowed is False
    # The message from 20 hours ago leaves the 24-hour window 4 hours from now.
    assert check.allowed_at == NOW + timedelta(hours=4)
    assert other_customer.allowed is True
    assert email.allowed is True


async def test_caps_dry_run_rows_count_only_in_dry_run(database_url: str) -> None:
    settings = MessagingSettings(sms_per_day=1)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await ledger.reserve(conn, replace(INTENT, created_at=NOW - timedelta(hours=1)), status="dry_run",
                             provider=None)

        live = await check_cap(conn, settings, 7, "sms", NOW, dry_run=False)
        dry = await check_cap(conn, settings, 7, "sms", NOW, dry_run=True)

    assert live.allowed is True
    assert dry.allowed is False


async def test_caps_zero_never_allows(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        check = await check_cap(conn, MessagingSettings(emails_per_day=0), 7, "email", NOW, dry_run=False)

    assert check.allowed is False
    assert check.allowed_at is None
