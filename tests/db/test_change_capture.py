"""Change capture: mirror-table writes become workflow_events rows and NOTIFY wake-ups."""

from __future__ import annotations

import json
import select

import psycopg
import pytest

from rulesd.servicetitan.catalog import ENTITIES, ENTITY_LIST

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


# Two different values of each column type, for changing every column of a row at once.
SAMPLE_VALUES: dict[str, tuple[object, object]] = {
    "text": ("first", "second"),
    "bigint": (1, 2),
    "integer": (3, 4),
    "numeric": ("1.50", "2.25"),
    "boolean": (False, True),
    "timestamp with time zone": ("2024-01-01T00:00:00Z", "2024-02-01T12:30:00.5Z"),
    "jsonb": (json.dumps({"a": 1}), json.dumps({"a": [2]})),
}
SKIPPED_COLUMNS = ("id", "raw", "synced_at")


def _settable_columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """Return the (name, type) of every column of ``table`` that an UPDATE can set, except id, raw and synced_at."""
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''"
        " ORDER BY attnum",
        (table,),
    ).fetchall()
    return [(name, kind) for name, kind in rows if name not in SKIPPED_COLUMNS]


def _row_document(conn: psycopg.Connection, table: str) -> dict[str, object]:
    query = psycopg.sql.SQL("SELECT to_jsonb(t) - 'raw' - 'synced_at' FROM {} AS t WHERE id = 1")
    row = conn.execute(query.format(psycopg.sql.Identifier(table))).fetchone()
    assert row is not None
    return row[0]


def _set_all(conn: psycopg.Connection, table: str, columns: list[tuple[str, str]], index: int) -> None:
    assignments = psycopg.sql.SQL(", ").join(
        psycopg.sql.SQL("{} = %s::{}").format(psycopg.sql.Identifier(name), psycopg.sql.SQL(kind))
        for name, kind in columns
    )
    values = [SAMPLE_VALUES[kind][index] for _, kind in columns]
    statement = psycopg.sql.SQL("UPDATE {} SET {}, raw = %s WHERE id = 1").format(psycopg.sql.Identifier(table), assignments)
    conn.execute(statement, [*values, json.dumps({"id": 1, "version": index})])


@pytest.mark.parametrize("entity", [e.name for e in ENTITY_LIST])
def test_update_reports_every_changed_column(database_url: str, entity: str) -> None:
    table = ENTITIES[entity].table
    with psycopg.connect(database_url) as conn:
        columns = _settable_columns(conn, table)
        conn.execute(psycopg.sql.SQL("INSERT INTO {} (id, raw) VALUES (1, %s)").format(psycopg.sql.Identifier(table)), (RAW,))
        _set_all(conn, table, columns, 0)
        before = _row_document(conn, table)
        _set_all(conn, table, columns, 1)
        after = _row_document(conn, table)
        conn.commit()
        last = _events(conn)[-1]

    expected = {key: [before[key], after[key]] for key in after if before[key] != after[key]}
    assert set(expected) >= {name for name, _ in columns} - {"missing_since"}
    assert last[0] == entity
    assert last[3] == {key: value for key, value in expected.items() if key != "missing_since"}


@pytest.mark.parametrize("entity", [e.name for e in ENTITY_LIST])
def test_status_of_every_table_matches_row(database_url: str, entity: str) -> None:
    table = ENTITIES[entity].table
    status_column = ENTITIES[entity].status_column
    with psycopg.connect(database_url) as conn:
        # Setting missing_since would make the first update a deletion.
        columns = [column for column in _settable_columns(conn, table) if column[0] != "missing_since"]
        conn.execute(psycopg.sql.SQL("INSERT INTO {} (id, raw) VALUES (1, %s)").format(psycopg.sql.Identifier(table)), (RAW,))
        _set_all(conn, table, columns, 0)
        _set_all(conn, table, columns, 1)
        conn.execute(psycopg.sql.SQL("DELETE FROM {} WHERE id = 1").format(psycopg.sql.Identifier(table)))
        conn.commit()
        created, first, second, deleted = _events(conn)

    expected_kind = "status_changed" if status_column else "updated"
    assert [created[2], first[2], second[2], deleted[2]] == ["created", expected_kind, expected_kind, "deleted"]
    if status_column:
        assert (second[4], second[5]) == ("first", "second")
        assert deleted[4] == "second"
    else:
        assert (second[4], second[5], deleted[4]) == (None, None, None)


def test_install_capture_picks_up_new_column(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE st_jobs ADD COLUMN extra text")
        conn.execute("INSERT INTO st_jobs (id, raw) VALUES (1, %s)", (RAW,))
        conn.execute("UPDATE st_jobs SET extra = 'a', raw = '{\"id\": 1, \"v\": 1}' WHERE id = 1")
        conn.execute("SELECT rulesd_install_capture('st_jobs', 'job', 'job_status')")
        conn.execute("UPDATE st_jobs SET extra = 'b', raw = '{\"id\": 1, \"v\": 2}' WHERE id = 1")
        conn.commit()
        before_install, after_install = [event[3] for event in _events(conn)[1:]]

    assert before_install == {}
    assert after_install == {"extra": ["a", "b"]}
