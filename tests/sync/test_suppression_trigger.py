"""The contact triggers' writes to suppressions under concurrent contact batches."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import psycopg

from rulesd.servicetitan.catalog import get_entity
from rulesd.sync.upsert import array_upsert_statement

PHONE_A = "5550000001"
PHONE_B = "5550000002"
WAIT_SECONDS = 30.0  # upper bound for the other transaction to block; the test never sleeps this long on success


def contact(record_id: int, owner_key: str, phone: str) -> dict[str, Any]:
    return {
        "id": record_id,
        owner_key: 1,
        "type": "MobilePhone",
        "value": phone,
        "active": True,
        "modifiedOn": "2024-05-01T10:00:00Z",
        "phoneSettings": {"phoneNumber": phone, "doNotText": True},
    }


def upsert_contact(conn: psycopg.Connection[Any], entity_name: str, record: dict[str, Any]) -> None:
    statement = array_upsert_statement(get_entity(entity_name), False)
    conn.execute(statement, (orjson.dumps([record]).decode(),))


def wait_until_blocked(conn: psycopg.Connection[Any], pid: int) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row is not None and row[0] == "Lock":
            return True
        time.sleep(0.05)
    return False


def test_suppression_trigger_opposite_orders_no_deadlock(database_url: str) -> None:
    """Two contact batches flag the same two numbers in opposite orders, as a customer and a location sync can."""
    customers = psycopg.connect(database_url)
    locations = psycopg.connect(database_url)
    observer = psycopg.connect(database_url, autocommit=True)
    errors: list[BaseException] = []

    def location_batch() -> None:
        try:
            upsert_contact(locations, "location_contact", contact(20, "locationId", PHONE_B))
            upsert_contact(locations, "location_contact", contact(21, "locationId", PHONE_A))
            locations.commit()
        except psycopg.Error as exc:
            errors.append(exc)
            locations.rollback()

    try:
        upsert_contact(customers, "customer_contact", contact(10, "customerId", PHONE_A))
        other = threading.Thread(target=location_batch, daemon=True)
        other.start()
        blocked = wait_until_blocked(observer, locations.info.backend_pid)
        try:
            # Without the trigger's advisory lock this waits on the location batch's
            # uncommitted PHONE_B row while that batch waits on PHONE_A.
            upsert_contact(customers, "customer_contact", contact(11, "customerId", PHONE_B))
            customers.commit()
        except psycopg.Error as exc:
            errors.append(exc)
            customers.rollback()
        other.join(WAIT_SECONDS)

        assert blocked
        assert not other.is_alive()
        assert errors == []
        rows = observer.execute(
            "SELECT address FROM suppressions WHERE channel = 'sms' AND source = 'servicetitan' ORDER BY address"
        ).fetchall()
        assert [r[0] for r in rows] == ["+15550000001", "+15550000002"]
    finally:
        customers.close()
        locations.close()
        observer.close()
