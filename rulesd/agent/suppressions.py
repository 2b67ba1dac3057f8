"""The suppression list: addresses that are never messaged on a channel.

Rows come from ServiceTitan's ``doNotText`` flags (a trigger on the
contact mirror tables), from provider opt-out errors and from
``rulesd contacts suppress``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import dict_row

from rulesd.agent.addresses import Channel, normalize_address
from rulesd.errors import AgentError

logger = logging.getLogger(__name__)

Source = Literal["servicetitan", "provider", "manual"]


@dataclass(frozen=True)
class Suppression:
    channel: Channel
    address: str
    source: Source
    reason: str | None
    created_at: datetime


def normalized_or_raise(channel: Channel, address: str) -> str:
    """Return ``address`` normalized for ``channel``; raise ``AgentError`` when it is not one."""
    normalized = normalize_address(channel, address)
    if normalized is None:
        kind = "phone number" if channel == "sms" else "e-mail address"
        raise AgentError(f"invalid {kind}: {address!r}", hint=f"pass a {kind} such as "
                         + ("+15551234567" if channel == "sms" else "name@example.com"))
    return normalized


async def is_suppressed(conn: psycopg.AsyncConnection, channel: Channel, address: str) -> bool:
    """Return True when the normalized ``address`` is suppressed on ``channel`` by any source."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT 1 FROM suppressions WHERE channel = %s AND address = %s LIMIT 1",
            (channel, address),
        )
        return await cur.fetchone() is not None


async def add_suppression(
    conn: psycopg.AsyncConnection, channel: Channel, address: str, source: Source, reason: str
) -> None:
    """Suppress the normalized ``address``; an existing row of the same source is kept."""
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO suppressions (channel, address, source, reason) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (channel, address, source, reason),
        )
    logger.info(
        "suppressed %s address from %s", channel, source,
        extra={"event": "address_suppressed", "channel": channel, "source": source},
    )


def suppress(conn: psycopg.Connection, channel: Channel, address: str, reason: str | None) -> bool:
    """Add a manual suppression; return False when one was already there."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO suppressions (channel, address, source, reason) VALUES (%s, %s, 'manual', %s)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (channel, address, reason),
        )
        return cur.fetchone() is not None


def unsuppress(conn: psycopg.Connection, channel: Channel, address: str) -> int:
    """Remove the manual and provider suppressions of ``address``; return how many rows went.

    A ``servicetitan`` row stays: it follows the contact's ``doNotText``
    flag, which has to be cleared in ServiceTitan.
    """
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM suppressions WHERE channel = %s AND address = %s AND source <> 'servicetitan'",
            (channel, address),
        )
        return cur.rowcount


def list_suppressions(conn: psycopg.Connection, channel: Channel | None = None) -> list[Suppression]:
    """Return every suppression, newest first, optionally of one channel."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT channel, address, source, reason, created_at FROM suppressions"
            " WHERE %(channel)s::text IS NULL OR channel = %(channel)s"
            " ORDER BY created_at DESC, channel, address",
            {"channel": channel},
        )
        return [Suppression(**row) for row in cur.fetchall()]
