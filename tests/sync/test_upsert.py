"""Bulk upsert against real Postgres: typed casts, change detection, events and bad values."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from rulesd.servicetitan.catalog import get_entity
from rulesd.servicetitan.pages import RecordArray, decode_page
from rulesd.sync.upsert import (
    Upserter,
    UpsertCounts,
    array_document,
    copy_line,
    create_staging_table,
    staging_documents,
)

INVOICE = get_entity("invoice")
ESTIMATE = get_entity("estimate")


def invoice(record_id: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": record_id,
        "active": True,
        "createdOn": "2024-03-01T10:00:00.1234567Z",
        "modifiedOn": "2024-03-02T11:30:00Z",
        "referenceNumber": f"INV-{record_id}",
        "total": "1250.50",
        "balance": "0.00",
        "customer": {"id": 77, "name": "Ada \\ \"Quoted\"\tTabbed"},
        "invoiceDate": "2024-03-01T00:00:00Z",
        "items": [{"sku": "A1", "price": "10.00"}],
    }
    record.update(fields)
    return record


def batch_of(records: list[dict[str, Any]], form: str) -> RecordArray:
    """Wrap records as the sync receives them: ``page`` is a page's JSON text, ``dicts`` decoded records."""
    if form == "page":
        body = json.dumps({"hasMore": False, "continueFrom": None, "data": records}).encode()
        return decode_page(body, export=True).records
    return RecordArray.from_records(records)


async def upsert(
    url: str, entity_name: str, records: list[dict[str, Any]], *, suppress: bool = False, form: str = "dicts"
) -> UpsertCounts:
    entity = get_entity(entity_name)
    batch = batch_of(records, form)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_staging_table(conn)
        async with conn.transaction():
            if suppress:
                await conn.execute("SELECT set_config('rulesd.suppress_events', 'on', true)")
            counts, _ = await Upserter(entity).write(conn, batch)
    return counts


async def upsert_batch(url: str, entity_name: str, batch: RecordArray) -> UpsertCounts:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_staging_table(conn)
        async with conn.transaction():
            counts, _ = await Upserter(get_entity(entity_name)).write(conn, batch)
    return counts


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("form", ["dicts", "page"])
def test_upsert_fills_typed_columns(database_url: str, form: str) -> None:
    counts = run(upsert(database_url, "invoice", [invoice(1)], form=form))

    assert counts == UpsertCounts(received=1, created=1)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT total, balance, customer_id, reference_number, created_on, invoice_date, raw"
            " FROM st_invoices WHERE id = 1"
        ).fetchone()
    assert row is not None
    total, balance, customer_id, reference, created_on, invoice_date, raw = row
    assert total == Decimal("1250.50")
    assert balance == Decimal("0.00")
    assert customer_id == 77
    assert reference == "INV-1"
    assert created_on.isoformat() == "2024-03-01T10:00:00.123457+00:00"
    assert invoice_date.isoformat() == "2024-03-01T00:00:00+00:00"
    assert raw["customer"]["name"] == "Ada \\ \"Quoted\"\tTabbed"
    assert raw["items"] == [{"sku": "A1", "price": "10.00"}]


@pytest.mark.parametrize("form", ["dicts", "page"])
def test_upsert_counts_created_updated_unchanged(database_url: str, form: str) -> None:
    run(upsert(database_url, "invoice", [invoice(1), invoice(2), invoice(3)], form=form))

    counts = run(upsert(database_url, "invoice", [invoice(1), invoice(2, total="99.00"), invoice(4)], form=form))

    assert counts == UpsertCounts(received=3, created=1, updated=1, unchanged=1)


def test_upsert_unchanged_rows_write_nothing(database_url: str) -> None:
    run(upsert(database_url, "invoice", [invoice(1)]))
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT xmin::text, synced_at FROM st_invoices WHERE id = 1").fetchone()

    run(upsert(database_url, "invoice", [invoice(1)]))

    with psycopg.connect(database_url) as conn:
        after = conn.execute("SELECT xmin::text, synced_at FROM st_invoices WHERE id = 1").fetchone()
    assert after == before


def test_upsert_events_only_for_real_changes(database_url: str) -> None:
    run(upsert(database_url, "estimate", [{"id": 5, "status": {"name": "Open", "value": 0}, "subtotal": 100}]))
    run(upsert(database_url, "estimate", [{"id": 5, "status": {"name": "Open", "value": 0}, "subtotal": 100}]))
    run(upsert(database_url, "estimate", [{"id": 5, "status": {"name": "Sold", "value": 1}, "subtotal": 100}]))

    with psycopg.connect(database_url) as conn:
        events = conn.execute(
            "SELECT kind, status_from, status_to FROM workflow_events WHERE entity = 'estimate' ORDER BY id"
        ).fetchall()
        total = conn.execute("SELECT total FROM st_estimates WHERE id = 5").fetchone()
    assert events == [("created", None, "Open"), ("status_changed", "Open", "Sold")]
    assert total == (Decimal("100"),)


def test_upsert_suppressed_batch_writes_no_events(database_url: str) -> None:
    run(upsert(database_url, "invoice", [invoice(1), invoice(2)], suppress=True))

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM workflow_events").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM st_invoices").fetchone() == (2,)


@pytest.mark.parametrize("form", ["dicts", "page"])
def test_upsert_repeated_id_keeps_last_copy(database_url: str, form: str) -> None:
    counts = run(upsert(database_url, "invoice", [invoice(1, total="1.00"), invoice(1, total="2.00")], form=form))

    assert counts.created == 1
    assert counts.received == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT total FROM st_invoices WHERE id = 1").fetchone() == (Decimal("2.00"),)


def test_upsert_empty_strings_become_null(database_url: str) -> None:
    run(upsert(database_url, "invoice", [invoice(1, total="", paidOn="", customer=None)]))

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT total, paid_on, customer_id FROM st_invoices WHERE id = 1").fetchone()
    assert row == (None, None, None)


def test_upsert_money_with_thousands_separator(database_url: str) -> None:
    counts = run(upsert(database_url, "invoice", [invoice(1, total="1,234.50", balance="12,000")]))

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT total, balance FROM st_invoices WHERE id = 1").fetchone()
    assert counts.failed == 0
    assert row == (Decimal("1234.50"), Decimal("12000"))


@pytest.mark.parametrize("form", ["dicts", "page"])
def test_upsert_bad_value_keeps_raw_and_counts_failed(database_url: str, form: str) -> None:
    records = [invoice(1), invoice(2, total="twelve dollars"), invoice(3)]

    counts = run(upsert(database_url, "invoice", records, form=form))

    assert counts == UpsertCounts(received=3, created=2, failed=1)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id, total, raw->>'total' FROM st_invoices ORDER BY id").fetchall()
    assert rows == [
        (1, Decimal("1250.50"), "1250.50"),
        (2, None, "twelve dollars"),
        (3, Decimal("1250.50"), "1250.50"),
    ]


@pytest.mark.parametrize("form", ["dicts", "page"])
def test_upsert_record_without_id_is_failed(database_url: str, form: str) -> None:
    counts = run(upsert(database_url, "invoice", [{"total": "1.00"}, invoice(1)], form=form))

    assert counts == UpsertCounts(received=2, created=1, failed=1)


def test_upsert_skips_generated_column(database_url: str) -> None:
    run(upsert(database_url, "estimate", [{"id": 9, "subtotal": "10.5", "tax": 1.25, "total": 999}]))

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT total FROM st_estimates WHERE id = 9").fetchone() == (Decimal("11.75"),)


def test_upsert_clears_missing_since(database_url: str) -> None:
    run(upsert(database_url, "invoice", [invoice(1)]))
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE st_invoices SET missing_since = now() WHERE id = 1")

    counts = run(upsert(database_url, "invoice", [invoice(1)], suppress=True))

    assert counts.updated == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT missing_since FROM st_invoices WHERE id = 1").fetchone() == (None,)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", b"1\t{\"id\":1,\"v\":\"plain\"}\n"),
        ("back\\slash", b"1\t{\"id\":1,\"v\":\"back\\\\\\\\slash\"}\n"),
        ("new\nline", b"1\t{\"id\":1,\"v\":\"new\\\\nline\"}\n"),
    ],
)
def test_staging_escapes_for_copy(value: str, expected: bytes) -> None:
    documents, failures = staging_documents(RecordArray.from_records([{"id": 1, "v": value}]))

    assert [copy_line(record_id, text) for record_id, text in documents.items()] == [expected]
    assert failures == []


def test_copy_line_escapes_whitespace_between_tokens() -> None:
    assert copy_line(7, b'{"a":\t1,\r\n"b":2}') == b'7\t{"a":\\t1,\\r\\n"b":2}\n'


def test_staging_keeps_page_text_of_last_copy() -> None:
    body = b'{"hasMore": false, "continueFrom": null, "data": [{"id": 1, "x": 1.50}, {"id": 1, "x": 0.10000000000000000001}]}'
    batch = decode_page(body, export=True).records

    documents, failures = staging_documents(batch)

    assert documents == {1: b'{"id": 1, "x": 0.10000000000000000001}'}
    assert failures == []


def test_upsert_page_keeps_wide_integer_exact(database_url: str) -> None:
    wide = 123456789012345678901234567890
    run(upsert(database_url, "invoice", [invoice(1, externalTicks=wide)], form="page"))

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT raw->>'externalTicks' FROM st_invoices WHERE id = 1").fetchone()
    assert row == (str(wide),)


def test_upsert_page_repeated_across_pages_keeps_last(database_url: str) -> None:
    first = batch_of([invoice(1, total="1.00"), invoice(2)], "page")
    second = batch_of([invoice(1, total="3.00")], "page")

    counts = run(upsert_batch(database_url, "invoice", RecordArray.concat([first, second])))

    assert counts == UpsertCounts(received=3, created=2)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT total FROM st_invoices WHERE id = 1").fetchone() == (Decimal("3.00"),)


def test_page_with_distinct_ids_is_sent_as_received() -> None:
    batch = batch_of([invoice(1), invoice(2)], "page")

    assert batch.text is not None
    assert array_document(batch) == batch.text


def test_page_with_repeated_id_takes_staging_path() -> None:
    batch = batch_of([invoice(1), invoice(1)], "page")

    assert array_document(batch) is None
