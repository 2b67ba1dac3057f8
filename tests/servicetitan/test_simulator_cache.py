"""The simulator's serialized records: cached JSON, page bodies and exact money and time text."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from rulesd.servicetitan.catalog import ENTITIES, ENTITY_LIST
from rulesd.servicetitan.simulator import Behaviours, Simulator
from rulesd.servicetitan.simulator.build import (
    JSON_ENCODER,
    LIST_EXCLUDED,
    _forty_percent,
    cents_text,
    day_timestamp,
    tax_cents,
    timestamp,
)
from rulesd.servicetitan.simulator.cache import RecordCache
from rulesd.servicetitan.simulator.queries import Queries

ANCHOR = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _compact(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def test_record_json_matches_built_record() -> None:
    sim = Simulator(seed=11, customers=60, anchor=ANCHOR)
    sim.apply("create_customer", name='Zoë "Q" O\'Brien')
    for entity in ENTITY_LIST:
        for index in range(sim.table(entity.name).count):
            assert sim.record_json(entity.name, index) == _compact(sim.record(entity.name, index))


def test_record_json_same_seed_same_bytes() -> None:
    first = Simulator(seed=12, customers=40, anchor=ANCHOR)
    second = Simulator(seed=12, customers=40, anchor=ANCHOR)
    for entity in ENTITY_LIST:
        for index in range(first.table(entity.name).count):
            assert first.record_json(entity.name, index) == second.record_json(entity.name, index)


def test_record_json_served_from_cache() -> None:
    sim = Simulator(seed=13, customers=20, anchor=ANCHOR)
    first = sim.record_json("estimate", 0)
    hits = sim.cache.hits
    assert sim.record_json("estimate", 0) is first
    assert sim.cache.hits == hits + 1


def test_cache_change_invalidates_changed_records() -> None:
    sim = Simulator(seed=13, customers=60, anchor=ANCHOR)
    customer = 3
    job = sim.apply("create_job", customer_id=sim.table("customer").record_id(customer))
    job_index = sim.index_of("job", job["id"])
    for entity in ("customer", "job", "invoice"):
        for index in range(sim.table(entity).count):
            sim.record_json(entity, index)
    unrelated = sim.record_json("customer", customer + 1)

    sim.apply("complete_job", id=job["id"])

    served_job = json.loads(sim.record_json("job", job_index))
    served_invoice = json.loads(sim.record_json("invoice", job_index))
    served_customer = json.loads(sim.record_json("customer", customer))
    assert served_job["jobStatus"] == "Completed"
    assert Decimal(served_invoice["balance"]) > 0
    assert served_customer == sim.record("customer", customer)
    assert served_customer["balance"] >= float(served_invoice["balance"])
    assert sim.record_json("customer", customer + 1) is unrelated


def test_cache_bound_drops_oldest_entries() -> None:
    sim = Simulator(seed=14, customers=30, anchor=ANCHOR, cache_bytes=0)
    table = sim.table("customer")
    cache = RecordCache(max_bytes=3000)
    blobs = [sim.record_json("customer", index) for index in range(20)]
    for index, blob in enumerate(blobs):
        cache.put(table, index, blob)
        assert cache.size <= cache.max_bytes
    assert cache.get(table, 0) is None
    assert cache.get(table, 19) == blobs[19]


def test_cache_disabled_still_serves() -> None:
    sim = Simulator(seed=14, customers=10, anchor=ANCHOR, cache_bytes=0)
    assert sim.record_json("job", 0) == _compact(sim.record("job", 0))
    assert sim.cache.size == 0


def test_list_page_json_drops_list_excluded_fields() -> None:
    sim = Simulator(seed=15, customers=40, anchor=ANCHOR)
    queries = Queries(sim)
    for name, excluded in LIST_EXCLUDED.items():
        page = queries.list_page(ENTITIES[name], {"pageSize": "200", "modifiedOnOrAfter": "2000-01-01"})
        assert page["data"]
        for record in page["data"]:
            expected = sim.get(name, record["id"])
            for key in excluded:
                expected.pop(key)
            assert record == expected


def test_page_json_equals_json_dumps() -> None:
    sim = Simulator(seed=16, customers=40, anchor=ANCHOR, behaviours=Behaviours(export_page_size=30))
    queries = Queries(sim)
    export = queries.export_page_json(ENTITIES["invoice"], {})
    assert export.records == 30
    assert export.body == _compact(json.loads(export.body))
    listed = queries.list_page_json(ENTITIES["customer"], {"pageSize": "7", "includeTotal": "true"})
    parsed = json.loads(listed.body)
    assert list(parsed) == ["page", "pageSize", "hasMore", "totalCount", "data"]
    assert listed.body == _compact(parsed)
    assert listed.records == len(parsed["data"]) == 7


def test_tax_cents_rounds_like_decimal() -> None:
    for cents in range(0, 200_000, 7):
        expected = (Decimal(cents) / 100 * Decimal("0.0825")).quantize(Decimal("0.01"))
        assert tax_cents(cents) == int(expected * 100), cents


def test_forty_percent_rounds_like_decimal() -> None:
    for cents in range(0, 50_000, 3):
        expected = (Decimal(cents) / 100 * Decimal("0.4")).quantize(Decimal("0.01"))
        assert _forty_percent(cents) == int(expected * 100), cents


def test_cents_text_formats_money() -> None:
    assert cents_text(0) == "0.00"
    assert cents_text(5) == "0.05"
    assert cents_text(38937) == "389.37"
    assert cents_text(-5) == "-0.05"


def test_timestamp_matches_isoformat() -> None:
    epoch = datetime(1970, 1, 1)
    for micros in (0, 1, 999_999, 1_767_225_600_000_000, 1_767_311_999_999_999, 1_700_000_123_456_789):
        moment = epoch + timedelta(microseconds=micros)
        assert timestamp(micros) == moment.isoformat(timespec="microseconds") + "0Z"
        assert day_timestamp(micros) == moment.date().isoformat() + "T00:00:00Z"


def test_warm_cache_builds_every_record() -> None:
    sim = Simulator(seed=17, customers=15, anchor=ANCHOR)
    built = sim.warm_cache(("customer", "invoice"))
    assert built == sim.counts()["customer"] + sim.counts()["invoice"]
    misses = sim.cache.misses
    for index in range(sim.table("invoice").count):
        sim.record_json("invoice", index)
    assert sim.cache.misses == misses
