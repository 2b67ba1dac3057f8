"""Change capture: mirror-table writes become workflow_events rows and NOTIFY wake-ups."""

from __future__ import annotations

import json
import select

import psycopg
import pytest

RAW = json.dumps({"id": 1})


def _listen(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("LISTEN rulesd_events")
    return conn


def _drain_notifications(conn: psycopg.Connection) -> list[str]:
    payloads = []
    # A committed transaction's notifications are delivered before the commit returns
    # to the writer, so a short non-blocking read sees all of them.
    select.select([conn.fileno()], [], [], 0.5)
    for notify in conn.notifies(timeout=0.2, stop_after=None):
        payloads.append(notify.payload)
    return payloads


def _events(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT entity, entity_id, kind, changes, status_from, status_to FROM workflow_events ORDER BY id"
    ).fetchall()


def test_estimate_insert_creates_one_event(database_url: str) -> None:
    listener = _listen(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO st_estimates (id, status, subtotal, raw) VALUES (1, 'Open', 600, %s)", (RAW,))
        conn.commit()
        events = _events(conn)

    assert len(events) == 1
    assert events[0][:3] == ("estimate", 1, "created")
    assert events[0][5] == "Open"
    assert _drain_notifications(listener) == ["estimate"]


def test_estimate_status_change_creates_status_changed_event(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO st_estimates (id, status, subtotal, raw) VALUES (1, 'Open', 600, %s)", (RAW,))
        conn.commit()
        listener = _listen(database_url)
        conn.execute("UPDATE st_estimates SET status = 'Sold', raw = %s WHERE id = 1", (json.dumps({"id": 1, "s": 1}),))
        conn.commit()
        events = _events(conn)

    assert len(events) == 2
    entity, entity_id, kind, changes, status_from, status_to = events[1]
    assert kind == "status_changed"
    assert status_from == "Open"
    assert status_to == "Sold"
    assert changes == {"status": ["Open", "Sold"]}
    assert _drain_notifications(listener) == ["estimate"]


def test_noop_update_creates_no_event(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO st_estimates (id, status, raw) VALUES (1, 'Open', %s)", (RAW,))
        conn.commit()
        listener = _listen(database_url)
        conn.execute("UPDATE st_estimates SET status = 'Open', raw = %s, synced_at = now() WHERE id = 1", (RAW,))
        conn.commit()
        count = conn.execute("SELECT count(*) FROM workflow_events").fetchone()[0]

    assert count == 1
    assert _drain_notifications(listener) == []


def test_suppressed_transaction_creates_no_event(database_url: str) -> None:
    listener = _listen(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT set_config('rulesd.suppress_events', 'on', true)")
        conn.execute("INSERT INTO st_estimates (id, status, raw) VALUES (1, 'Open', %s)", (RAW,))
        conn.execute("UPDATE st_estimates SET status = 'Sold' WHERE id = 1")
        conn.commit()
        count = conn.execute("SELECT count(*) FROM workflow_events").fetchone()[0]
        # The flag is transaction-local: the next transaction captures again.
        conn.execute("UPDATE st_estimates SET status = 'Dismissed' WHERE id = 1")
        conn.commit()
        after = conn.execute("SELECT kind FROM workflow_events").fetchall()

    assert count == 0
    assert after == [("status_changed",)]
    assert _drain_notifications(listener) == ["estimate"]


def test_raw_only_change_is_an_update(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO st_customers (id, name, raw) VALUES (7, 'Ann', %s)", (RAW,))
        conn.execute("UPDATE st_customers SET raw = %s WHERE id = 7", (json.dumps({"id": 7, "memo": "x"}),))
        conn.commit()
        kinds = [row[2] for row in _events(conn)]

    assert kinds == ["created", "updated"]


def test_missing_since_and_delete_are_deleted(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO st_jobs (id, job_status, raw) VALUES (5, 'Scheduled', %s)", (RAW,))
        conn.execute("UPDATE st_jobs SET missing_since = now() WHERE id = 5")
        conn.execute("DELETE FROM st_jobs WHERE id = 5")
        conn.commit()
        events = _events(conn)

    assert [e[2] for e in events] == ["created", "deleted", "deleted"]
    assert events[2][4] == "Scheduled"


@pytest.mark.parametrize("status_column_table", ["st_jobs", "st_appointments", "st_memberships"])
def test_status_tables_report_status_changes(database_url: str, status_column_table: str) -> None:
    column = "job_status" if status_column_table == "st_jobs" else "status"
    with psycopg.connect(database_url) as conn:
        conn.execute(
            psycopg.sql.SQL("INSERT INTO {} (id, {}, raw) VALUES (1, 'A', %s)").format(
                psycopg.sql.Identifier(status_column_table), psycopg.sql.Identifier(column)
            ),
            (RAW,),
        )
        conn.execute(
            psycopg.sql.SQL("UPDATE {} SET {} = 'B'").format(
                psycopg.sql.Identifier(status_column_table), psycopg.sql.Identifier(column)
            )
        )
        conn.commit()
        last = _events(conn)[-1]

    assert last[2] == "status_changed"
    assert (last[4], last[5]) == ("A", "B")
