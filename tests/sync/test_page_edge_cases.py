"""Page bodies at the edges of the sync's decoding and upsert paths, against real Postgres.

A page whose records all have distinct integer ids is sent to Postgres as
the JSON text that arrived. A batch with a repeated id, or with a value
that fails a cast, goes through the COPY staging path and then record by
record. These tests check that a record's ``raw`` and the sync's counts do
not depend on which path its batch took, and that a record Postgres cannot
store is reported as such.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from rulesd.config import ServiceTitanSettings, Settings, SyncSettings
from rulesd.servicetitan.catalog import get_entity
from rulesd.servicetitan.client import ServiceTitanClient
from rulesd.servicetitan.pages import RecordArray, decode_page
from rulesd.sync.orchestrator import run_sync
from rulesd.sync.report import SyncReport
from rulesd.sync.state import SyncKind
from rulesd.sync.upsert import Upserter, UpsertCounts, create_staging_table

# 28 significant digits, more than the 17 that a float64 keeps.
LONG_DECIMAL = "0.0825000000000000000000000001"
# Postgres's numeric stores this exactly, and a Python float makes it infinity.
HUGE_NUMBER = "1e400"
# Past the 131,072 digits that Postgres's numeric allows before the decimal point.
NUMBER_BEYOND_NUMERIC = "1e131072"
BIGINT_MAX = 2**63 - 1


def page_array(data: str) -> RecordArray:
    """Decode ``data`` (a JSON array's text) as the records of one export page."""
    body = '{"hasMore": false, "continueFrom": "token", "data": %s}' % data
    return decode_page(body.encode(), export=True).records


async def write_async(url: str, batch: RecordArray, *, events: bool, track_seen: bool) -> UpsertCounts:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await create_staging_table(conn)
        async with conn.transaction():
            if not events:
                await conn.execute("SELECT set_config('rulesd.suppress_events', 'on', true)")
            counts, _ = await Upserter(get_entity("invoice"), track_seen=track_seen).write(conn, batch)
    return counts


def write(url: str, batch: RecordArray, *, events: bool = False, track_seen: bool = False) -> UpsertCounts:
    """Upsert ``batch`` into ``st_invoices`` in one transaction, as one sync batch does."""
    return asyncio.run(write_async(url, batch, events=events, track_seen=track_seen))


def fetch(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def raw_value_equals(url: str, record_id: int, key: str, json_text: str) -> bool:
    """Return whether the stored ``raw ->key`` equals the JSON value ``json_text`` as jsonb compares it."""
    rows = fetch(url, "SELECT raw -> %s = %s::jsonb FROM st_invoices WHERE id = %s", key, json_text, record_id)
    assert rows, f"invoice {record_id} is not stored"
    return bool(rows[0][0])


def export_handler(pages_by_path: dict[str, list[str]]) -> Any:
    """Serve a token and, for each export path suffix, its pages in order, chained by ``continueFrom``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/connect/token":
            return httpx.Response(200, json={"access_token": "token", "expires_in": 900})
        suffix = next(path for path in pages_by_path if request.url.path.endswith(path))
        pages = pages_by_path[suffix]
        token = request.url.params.get("from", "")
        index = int(token.removeprefix("page-")) if token.startswith("page-") else 0
        has_more = "true" if index < len(pages) - 1 else "false"
        body = '{"hasMore": %s, "continueFrom": "page-%d", "data": %s}' % (has_more, index + 1, pages[index])
        return httpx.Response(200, content=body.encode(), headers={"content-type": "application/json"})

    return handler


def sync_pages(url: str, pages_by_path: dict[str, list[str]], entities: list[str], kind: SyncKind) -> SyncReport:
    """Run the real orchestrator over crafted export pages served by an ``httpx.MockTransport``."""
    api = ServiceTitanSettings(
        environment="integration",
        tenant_id=42,
        client_id="client",
        client_secret="secret",
        app_key="key",
        page_delay=timedelta(0),
        rate_limit=0.0,
        max_retries=0,
    )
    settings = Settings(servicetitan=api, sync=dataclasses.replace(SyncSettings(), batch_size=5000, concurrency=2))

    async def go() -> SyncReport:
        transport = httpx.MockTransport(export_handler(pages_by_path))
        async with ServiceTitanClient(api, transport=transport) as client:
            return await run_sync(settings, url, kind=kind, entities=entities, client=client)

    return asyncio.run(go())


def test_repeated_id_batch_keeps_number_text(database_url: str) -> None:
    batch = page_array('[{"id": 1, "taxRate": %s}, {"id": 2}, {"id": 2}]' % LONG_DECIMAL)

    write(database_url, batch)

    assert raw_value_equals(database_url, 1, "taxRate", LONG_DECIMAL)


def test_bad_value_batch_keeps_number_text(database_url: str) -> None:
    batch = page_array(
        '[{"id": 1, "taxRate": %s, "ticks": %s}, {"id": 2, "total": "not a number"}]' % (LONG_DECIMAL, HUGE_NUMBER)
    )

    counts = write(database_url, batch)

    assert counts.failed == 1
    assert raw_value_equals(database_url, 1, "taxRate", LONG_DECIMAL)
    assert raw_value_equals(database_url, 1, "ticks", HUGE_NUMBER)


def test_bad_value_batch_keeps_wide_integer(database_url: str) -> None:
    wide = "123456789012345678901234567890"
    batch = page_array('[{"id": 1, "ticks": %s}, {"id": 2, "total": "not a number"}]' % wide)

    write(database_url, batch)

    assert raw_value_equals(database_url, 1, "ticks", wide)


def test_resent_record_writes_no_event(database_url: str) -> None:
    record = '{"id": 1, "total": "10.00", "taxRate": %s}' % LONG_DECIMAL
    write(database_url, page_array("[%s]" % record), events=True)

    # The same record again, in a batch that takes the staging path
    # because an export feed with recent changes repeated another id.
    counts = write(database_url, page_array('[%s, {"id": 2}, {"id": 2}]' % record), events=True)

    assert counts.updated == 0
    assert fetch(database_url, "SELECT kind FROM workflow_events WHERE entity_id = 1 ORDER BY id") == [("created",)]


def test_number_beyond_numeric_is_counted_failed(database_url: str) -> None:
    batch = page_array('[{"id": 1, "ticks": %s}, {"id": 2}]' % NUMBER_BEYOND_NUMERIC)

    counts = write(database_url, batch)

    assert counts.failed == 1
    assert fetch(database_url, "SELECT id FROM st_invoices WHERE raw -> 'ticks' = 'null'::jsonb") == []


def test_repeated_id_key_takes_last_value(database_url: str) -> None:
    # Postgres's jsonb and the json module keep the last of repeated keys,
    # and the id the page decoder reads must be the same one.
    batch = page_array('[{"id": 1, "summary": "first", "id": 3}, {"id": 2}]')

    counts = write(database_url, batch)

    assert batch.ids == [3, 2]
    assert counts == UpsertCounts(received=2, created=2)
    rows = fetch(database_url, "SELECT id, raw ->> 'summary' FROM st_invoices ORDER BY id")
    assert rows == [(2, None), (3, "first")]


def test_id_beyond_bigint_is_counted_failed(database_url: str) -> None:
    batch = page_array('[{"id": 1}, {"id": %d}, {"id": %d}]' % (BIGINT_MAX, BIGINT_MAX + 1))

    counts = write(database_url, batch)

    assert counts == UpsertCounts(received=3, created=2, failed=1)
    assert fetch(database_url, "SELECT id FROM st_invoices ORDER BY id") == [(1,), (BIGINT_MAX,)]


def test_unstorable_record_is_not_marked_missing(database_url: str) -> None:
    loaded = {"/export/invoices": ['[{"id": 1, "summary": "ok"}, {"id": 2}]']}
    first = sync_pages(database_url, loaded, ["invoice"], "initial")
    assert first.succeeded, first.failed

    # jsonb rejects \u0000, so the record's new version cannot be stored,
    # but ServiceTitan still returned it.
    pages = {"/export/invoices": ['[{"id": 1, "summary": "a\\u0000b"}, {"id": 2}]']}
    report = sync_pages(database_url, pages, ["invoice"], "full")

    (result,) = report.results
    assert result.counts.failed == 1
    assert result.missing == 0
    assert fetch(database_url, "SELECT id FROM st_invoices WHERE missing_since IS NOT NULL") == []


def test_dropped_record_not_summarized_as_kept(database_url: str) -> None:
    pages = {"/export/invoices": ['[{"id": 1, "summary": "a\\u0000b"}, {"id": 2}]']}

    report = sync_pages(database_url, pages, ["invoice"], "initial")

    (result,) = report.results
    assert result.counts.failed == 1
    assert fetch(database_url, "SELECT id FROM st_invoices ORDER BY id") == [(2,)]
    assert result.error is not None
    assert "raw JSON was kept" not in result.error


def test_deeply_nested_record_fails_only_its_entity(database_url: str) -> None:
    depth = 3000  # beyond the roughly 1,000 levels that msgspec, orjson and the json module decode
    deep = "[" * depth + "]" * depth
    pages = {
        "/export/invoices": ['[{"id": 1}, {"id": 2, "deep": %s}]' % deep],
        "/export/payments": ['[{"id": 1}]'],
    }

    report = sync_pages(database_url, pages, ["invoice", "payment"], "initial")

    statuses = {result.entity: result.status for result in report.results}
    assert statuses == {"invoice": "failed", "payment": "succeeded"}
