"""Open Postgres connections, translating invalid URLs and psycopg's connection errors into ``DatabaseError``.

This is the one boundary where a failed connect becomes a message a user
can act on: which server, what went wrong, what to do.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from rulesd.db.server import redact_url
from rulesd.errors import DatabaseError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds

URL_FORM_HINT = (
    "write it as postgresql://user:password@host:port/dbname, and percent-encode special characters"
    " in the user name and password (a space as %20, @ as %40, / as %2F, % as %25)"
)

# Errors of libpq's conninfo parser, which psycopg 3 raises as
# ProgrammingError, mapped to a reason in our own words. libpq's text quotes
# the part it could not parse, which can be the password, so it is never shown
# (messages as of psycopg 3.3 on libpq 18).
_PARSE_REASONS: tuple[tuple[str, str], ...] = (
    ("unexpected spaces", "it contains a space"),
    ("invalid percent-encoded token", "it contains a % that is not followed by two hexadecimal digits"),
    ("invalid uri query parameter", "it has a query parameter that libpq does not know"),
    ("unterminated quoted string", "it has a quoted value with no closing quote"),
    ("ipv6 host address", "it has an IPv6 host address with no closing ]"),
)
_URL_SCHEMES = ("postgresql://", "postgres://")


def connect(url: str, *, autocommit: bool = False, dict_rows: bool = False) -> psycopg.Connection:
    """Open a connection to ``url``; raise ``DatabaseError`` with a hint when that fails."""
    check_url(url)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        raise connection_error(url, exc) from exc
    if dict_rows:
        conn.row_factory = dict_row  # type: ignore[assignment]
    return conn


async def async_connect(url: str, *, autocommit: bool = False, dict_rows: bool = False) -> psycopg.AsyncConnection:
    """Open an asyncio connection to ``url``; raise ``DatabaseError`` with a hint when that fails."""
    check_url(url)
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        raise connection_error(url, exc) from exc
    if dict_rows:
        conn.row_factory = dict_row  # type: ignore[assignment]
    return conn


def check_url(url: str) -> None:
    """Parse ``url`` as libpq does; raise ``DatabaseError`` without any of its text when it is invalid.

    The message never quotes the URL or psycopg's error, because both can
    contain the password.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        # Not chained: a debug traceback would print psycopg's text, password included.
        raise invalid_url_error(_parse_reason(url, str(exc))) from None
    # libpq rejects an invalid port only at connect time, and connection_error
    # cannot redact such a URL because urllib raises ValueError on its port.
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise invalid_url_error("its port is not a number from 1 to 65535")


def invalid_url_error(reason: str | None) -> DatabaseError:
    """Build the error for a database URL that cannot be parsed, saying why when ``reason`` is given."""
    message = "the database URL is not valid"
    if reason:
        message += f": {reason}"
    return DatabaseError(message, hint=URL_FORM_HINT)


def _parse_reason(url: str, parse_error: str) -> str | None:
    lowered = parse_error.lower()
    if 'missing "="' in lowered:
        if "://" in url and not url.startswith(_URL_SCHEMES):
            return "its scheme is not postgresql:// or postgres://"
        if "://" not in url and "=" in url:
            return "one of its key=value settings has no =, or a value with a space in it is not in single quotes"
        return "it is neither a postgresql:// URL nor a list of key=value settings"
    for fragment, reason in _PARSE_REASONS:
        if fragment in lowered:
            return reason
    return None


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
