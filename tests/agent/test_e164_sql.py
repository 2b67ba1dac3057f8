"""The SQL phone normaliser used by suppressions agrees with the agent's Python one."""

from __future__ import annotations

import psycopg
import pytest

from rulesd.agent.addresses import normalize_phone

CASES = [
    "512-555-0101",
    "(512) 555-0101",
    "+1 512 555 0101",
    "15125550101",
    "+64 9 123 4567",
    "512-555-0101 x23",
    "512 555 0101 / 512 555 0102",
    "555-0101",
    "12345",
    "",
    "call me",
    "+44 20 7946 0958",
    "  5125550101  ",
    "+5125550101",
]


@pytest.mark.parametrize("raw", CASES)
def test_rulesd_e164_matches_normalize_phone(database_url: str, raw: str) -> None:
    with psycopg.connect(database_url) as conn:
        (from_sql,) = conn.execute("SELECT rulesd_e164(%s)", (raw,)).fetchone()

    assert from_sql == normalize_phone(raw)
