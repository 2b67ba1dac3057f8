"""The action ledger: every intended message is written before it is sent.

A row is inserted and committed as ``pending`` (``dry_run`` in a dry run)
before the provider is called, then updated to ``sent`` or ``failed``. Two
unique keys make a second message impossible: one per enrollment, step,
channel and recipient, and one per enrollment, step and channel while a
row is pending, sent, unknown or dry_run. A ``pending`` row that belongs
to an earlier step attempt means that attempt died between the write and
the provider's answer: it becomes ``unknown`` and is never re-sent.

Every function here runs on an autocommit connection, so each write is
its own committed transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row

from rulesd.agent.addresses import Channel

logger = logging.getLogger(__name__)

Status = Literal["pending", "sent", "failed", "unknown", "dry_run", "refused"]

# Rows that stand for a message that went out or may have gone out.
ACTIVE_STATUSES = ("pending", "sent", "unknown", "dry_run")

_COLUMNS = (
    "id, instance_id, step_run_id, attempt, rule_id, step_name, channel, recipient, customer_id,"
    " location_id, status, provider, provider_id, error, body, subject, created_at, sent_at"
)


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    instance_id: int
    step_run_id: int | None
    attempt: int | None
    rule_id: str
    step_name: str
    channel: Channel
    recipient: str
    customer_id: int | None
    location_id: int | None
    status: Status
    provider: str | None
    provider_id: str | None
    error: str | None
    body: str | None
    subject: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class Intent:
    """One message a step means to send, before it is written."""

    instance_id: int
    step_run_id: int
    attempt: int
    rule_id: str
    step_name: str
    channel: Channel
    recipient: str
    customer_id: int | None
    location_id: int | None
    body: str
    subject: str | None
    created_at: datetime


@dataclass(frozen=True)
class Reservation:
    """The outcome of writing an intent: ``entry`` is ours when ``reserved``, else the row in the way."""

    reserved: bool
    entry: LedgerEntry | None


_RESERVE = f"""
INSERT INTO action_ledger (instance_id, step_run_id, attempt, rule_id, step_name, channel,
                           recipient, customer_id, location_id, status, provider, body, subject,
                           created_at)
VALUES (%(instance_id)s, %(step_run_id)s, %(attempt)s, %(rule_id)s, %(step_name)s, %(channel)s,
        %(recipient)s, %(customer_id)s, %(location_id)s, %(status)s, %(provider)s, %(body)s,
        %(subject)s, %(created_at)s)
ON CONFLICT (instance_id, step_name, channel, recipient) DO UPDATE
SET step_run_id = EXCLUDED.step_run_id, attempt = EXCLUDED.attempt, status = EXCLUDED.status,
    provider = EXCLUDED.provider, provider_id = NULL, error = NULL, body = EXCLUDED.body,
    subject = EXCLUDED.subject, created_at = EXCLUDED.created_at, sent_at = NULL,
    updated_at = now()
WHERE action_ledger.status IN ('refused', 'failed')
RETURNING {_COLUMNS}
"""

_ACTIVE_FOR_CHANNEL = f"""
SELECT {_COLUMNS} FROM action_ledger
WHERE instance_id = %s AND step_name = %s AND channel = %s
  AND status IN ('pending', 'sent', 'unknown', 'dry_run')
"""


async def reserve(
    conn: psycopg.AsyncConnection, intent: Intent, *, status: Status, provider: str | None
) -> Reservation:
    """Write ``intent`` with ``status`` (pending or dry_run) and commit it.

    A refused or failed row for the same recipient is reused. When the
    channel already has an active row for this step, nothing is written and
    that row is returned with ``reserved=False``.
    """
    params = {**intent.__dict__, "status": status, "provider": provider}
    try:
        async with conn.cursor(row_factory=class_row(LedgerEntry)) as cur:
            await cur.execute(_RESERVE, params)
            entry = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        entry = None
    if entry is not None:
        return Reservation(reserved=True, entry=entry)
    return Reservation(reserved=False, entry=await active_entry(conn, intent.instance_id, intent.step_name, intent.channel))


async def active_entry(
    conn: psycopg.AsyncConnection, instance_id: int, step_name: str, channel: Channel
) -> LedgerEntry | None:
    """Return the pending, sent, unknown or dry_run row of this step and channel, if any."""
    async with conn.cursor(row_factory=class_row(LedgerEntry)) as cur:
        await cur.execute(_ACTIVE_FOR_CHANNEL, (instance_id, step_name, channel))
        return await cur.fetchone()


async def step_entries(conn: psycopg.AsyncConnection, instance_id: int, step_name: str) -> list[LedgerEntry]:
    """Return every row of one step of one enrollment, oldest first."""
    async with conn.cursor(row_factory=class_row(LedgerEntry)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM action_ledger WHERE instance_id = %s AND step_name = %s ORDER BY id",
            (instance_id, step_name),
        )
        return await cur.fetchall()


async def mark_sent(
    conn: psycopg.AsyncConnection, entry_id: int, provider_id: str | None, sent_at: datetime
) -> None:
    await _update(conn, entry_id, "sent", provider_id=provider_id, sent_at=sent_at)


async def mark_failed(conn: psycopg.AsyncConnection, entry_id: int, error: str) -> None:
    await _update(conn, entry_id, "failed", error=error)


async def mark_unknown(conn: psycopg.AsyncConnection, entry_id: int, error: str) -> None:
    await _update(conn, entry_id, "unknown", error=error)
    logger.warning(
        "ledger row %s marked unknown: %s", entry_id, error,
        extra={"event": "ledger_unknown", "ledger_id": entry_id},
    )


async def _update(
    conn: psycopg.AsyncConnection,
    entry_id: int,
    status: Status,
    *,
    provider_id: str | None = None,
    error: str | None = None,
    sent_at: datetime | None = None,
) -> None:
    async with conn.cursor() as cur:
        await cur.execute(
            "UPDATE action_ledger SET status = %s, provider_id = coalesce(%s, provider_id),"
            " error = %s, sent_at = %s, updated_at = now() WHERE id = %s",
            (status, provider_id, error, sent_at, entry_id),
        )


async def record_refusal(conn: psycopg.AsyncConnection, intent: Intent, reason: str) -> None:
    """Store a refused message with the reason; a row that went further is left alone."""
    params = {**intent.__dict__, "error": reason}
    async with conn.cursor() as cur:
        await cur.execute(
            """
            INSERT INTO action_ledger (instance_id, step_run_id, attempt, rule_id, step_name, channel,
                                       recipient, customer_id, location_id, status, error, body,
                                       subject, created_at)
            VALUES (%(instance_id)s, %(step_run_id)s, %(attempt)s, %(rule_id)s, %(step_name)s,
                    %(channel)s, %(recipient)s, %(customer_id)s, %(location_id)s, 'refused',
                    %(error)s, %(body)s, %(subject)s, %(created_at)s)
            ON CONFLICT (instance_id, step_name, channel, recipient) DO UPDATE
            SET step_run_id = EXCLUDED.step_run_id, attempt = EXCLUDED.attempt, status = 'refused',
                error = EXCLUDED.error, body = EXCLUDED.body, subject = EXCLUDED.subject,
                updated_at = now()
            WHERE action_ledger.status IN ('refused', 'failed')
            """,
            params,
        )


async def recent_sends(
    conn: psycopg.AsyncConnection, customer_id: int, channel: Channel, since: datetime, *, include_dry_run: bool
) -> list[datetime]:
    """Return when each of the customer's messages on ``channel`` since ``since`` was written, oldest first.

    Pending and unknown rows count: they may have been delivered.
    """
    statuses = ["pending", "sent", "unknown"] + (["dry_run"] if include_dry_run else [])
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT created_at FROM action_ledger WHERE customer_id = %s AND channel = %s"
            " AND created_at >= %s AND status = ANY(%s) ORDER BY created_at",
            (customer_id, channel, since, statuses),
        )
        return [row[0] for row in await cur.fetchall()]
