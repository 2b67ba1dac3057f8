"""The connect boundary: invalid database URLs become one ``DatabaseError`` that never shows the password."""

from __future__ import annotations

import asyncio

import pytest

from rulesd.db.connect import async_connect, connect
from rulesd.errors import DatabaseError

SECRET = "s3cr3t"

# (URL, the reason the message must give). Each URL contains SECRET where
# libpq's own error would quote it. No URL names a reachable server: every
# one must be rejected before a connection is tried.
INVALID_URLS = [
    (f"postgresql://postgres:{SECRET} pw@127.0.0.1:9/x", "it contains a space"),
    (f"postgresql://postgres:{SECRET}%zz@127.0.0.1:9/x", "it contains a % that is not followed by two hexadecimal"),
    (f"127.0.0.1:9/{SECRET}", "it is neither a postgresql:// URL nor a list of key=value settings"),
    (f"mysql://postgres:{SECRET}@127.0.0.1:9/x", "its scheme is not postgresql:// or postgres://"),
    (f"host=127.0.0.1 port=9 password={SECRET} pw", "one of its key=value settings has no ="),
    (f"host=127.0.0.1 port=9 password='{SECRET} pw", "it has a quoted value with no closing quote"),
    (f"postgresql://postgres:{SECRET}@[::1/x", "it has an IPv6 host address with no closing ]"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:abc/x", "its port is not a number from 1 to 65535"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:99999/x", "its port is not a number from 1 to 65535"),
]


@pytest.mark.parametrize(("url", "reason"), INVALID_URLS)
def test_connect_invalid_url_hides_password(url: str, reason: str) -> None:
    with pytest.raises(DatabaseError) as caught:
        connect(url)

    error = caught.value
    assert error.message.startswith("the database URL is not valid")
    assert reason in error.message
    assert SECRET not in str(error)
    assert error.hint is not None
    assert "postgresql://user:password@host:port/dbname" in error.hint
    assert "percent-encode" in error.hint
    assert error.__cause__ is None  # psycopg's error, which quotes the password, is not chained
    assert error.exit_code == 3


@pytest.mark.parametrize(("url", "reason"), INVALID_URLS)
def test_async_connect_invalid_url_hides_password(url: str, reason: str) -> None:
    with pytest.raises(DatabaseError) as caught:
        asyncio.run(async_connect(url))

    error = caught.value
    assert error.message.startswith("the database URL is not valid")
    assert reason in error.message
    assert SECRET not in str(error)
    assert error.__cause__ is None


def test_connect_valid_url_still_connects(database_url: str) -> None:
    with connect(database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_connect_unreachable_server_unchanged() -> None:
    # No Postgres listens on port 9 (discard) of loopback, and nothing leaves the machine.
    with pytest.raises(DatabaseError) as caught:
        connect(f"postgresql://postgres:{SECRET}@127.0.0.1:9/x")

    assert caught.value.message.startswith("cannot connect to Postgres at postgresql://postgres:***@127.0.0.1:9/x")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_redact_url_survives_invalid_port(port: str) -> None:
    from rulesd.db.server import redact_url

    redacted = redact_url(f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/x")

    assert SECRET not in redacted
    assert redacted == f"postgresql://postgres:***@127.0.0.1:{port}/x"
