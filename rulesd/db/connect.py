"""Open Postgres connections, translating psycopg's connection errors into ``DatabaseError``.

This is the one boundary where a failed connect becomes a message a user
can act on: which server, what went wrong, what to do.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import dict_row

from rulesd.db.server import redact_url
from rulesd.errors import DatabaseError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds


def connect(url: str, *, autocommit: bool = False, dict_rows: bool = False) -> psycopg.Connection:
    """Open a connection to ``url``; raise ``DatabaseError`` with a hint when that fails."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        raise connection_error(url, exc) from exc
    if dict_rows:
        conn.row_factory = dict_row  # type: ignore[assignment]
    return conn


async def async_connect(url: str, *, autocommit: bool = False, dict_rows: bool = False) -> psycopg.AsyncConnection:
    """Open an asyncio connection to ``url``; raise ``DatabaseError`` with a hint when that fails."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        raise connection_error(url, exc) from exc
    if dict_rows:
        conn.row_factory = dict_row  # type: ignore[assignment]
    return conn


def connection_error(url: str, exc: psycopg.OperationalError) -> DatabaseError:
    """Turn a failed connect into one line saying what failed and what to do."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # psycopg puts the server's reason on the first line; later lines are libpq's generic advice.
    detail = lines[0] if lines else type(exc).__name__
    where = redact_url(url)
    lowered = detail.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        hint = "check the user name and password in the database URL"
    elif "does not exist" in lowered and "database" in lowered:
        hint = "create the database first (createdb NAME) or fix its name in the URL"
    elif "role" in lowered and "does not exist" in lowered:
        hint = "create that role or use another user in the URL"
    elif "connection refused" in lowered or "no such file" in lowered or "timeout" in lowered:
        hint = "start the Postgres server or fix the host and port in the URL; omit the URL to use the embedded Postgres"
    else:
        hint = "check that the server is running and the URL is right"
    return DatabaseError(f"cannot connect to Postgres at {where}: {detail}", hint=hint)
