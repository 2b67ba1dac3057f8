"""``rulesd contacts`` through the click runner against a migrated database."""

from __future__ import annotations

import psycopg
from click.testing import CliRunner

from rulesd.cli import main


def run(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--database-url", database_url, "contacts", *args])
    return result.exit_code, result.output


def test_contacts_suppress_normalizes_phone(database_url: str) -> None:
    code, output = run(database_url, "suppress", "(512) 555-0199", "--reason", "asked on the phone")

    assert code == 0, output
    assert "suppressed sms +15125550199" in output
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT channel, address, source, reason FROM suppressions").fetchone()
    assert row == ("sms", "+15125550199", "manual", "asked on the phone")


def test_contacts_suppress_infers_email_channel(database_url: str) -> None:
    code, output = run(database_url, "suppress", "Pat.Lee@Example.com")

    assert code == 0, output
    assert "suppressed email pat.lee@example.com" in output


def test_contacts_suppress_rejects_invalid_address(database_url: str) -> None:
    code, output = run(database_url, "suppress", "call me maybe")

    assert code == 2
    assert "'call me maybe' is not a valid phone number" in output


def test_contacts_unsuppress_keeps_servicetitan_flag(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO st_customer_contacts (id, customer_id, type, value, do_not_text, raw)"
                     " VALUES (1, 1, 'MobilePhone', '512-555-0199', true, '{}')")
    run(database_url, "suppress", "+15125550199")

    code, output = run(database_url, "unsuppress", "5125550199")

    assert code == 0, output
    assert "removed 1 suppression(s)" in output
    assert "stays suppressed" in output
    with psycopg.connect(database_url) as conn:
        sources = conn.execute("SELECT source FROM suppressions").fetchall()
    assert sources == [("servicetitan",)]


def test_contacts_list_shows_rows(database_url: str) -> None:
    run(database_url, "suppress", "+15125550199", "--reason", "STOP by text")
    run(database_url, "suppress", "pat@example.com")

    code, output = run(database_url, "list", "--channel", "sms")

    assert code == 0, output
    assert "+15125550199" in output
    assert "STOP by text" in output
    assert "pat@example.com" not in output


def test_contacts_list_empty(database_url: str) -> None:
    code, output = run(database_url, "list")

    assert code == 0
    assert output.strip() == "no suppressed addresses"
