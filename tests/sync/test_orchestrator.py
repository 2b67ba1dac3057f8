"""The sync orchestrator against the simulator and real Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from rulesd.config import Settings
from rulesd.errors import AuthenticationError, SyncError, TransientAPIError
from rulesd.servicetitan.catalog import ENTITIES, ENTITY_LIST, Entity
from rulesd.servicetitan.client import ServiceTitanClient
from rulesd.servicetitan.simulator import SimulatorServer
from rulesd.sync.lock import SyncLock
from rulesd.sync.orchestrator import run_sync
from rulesd.sync.progress import NullProgress
from rulesd.sync.report import SyncReport
from rulesd.sync.state import SyncKind
from tests.sync.conftest import sync_settings


def sync(
    settings: Settings,
    url: str,
    kind: SyncKind = "incremental",
    entities: list[str] | None = None,
    client: Any = None,
) -> SyncReport:
    async def go() -> SyncReport:
        if client is not None:
            async with client:
                return await run_sync(settings, url, kind=kind, entities=entities, client=client)
        return await run_sync(settings, url, kind=kind, entities=entities)

    return asyncio.run(go())


def mirror_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            entity.name: conn.execute(f"SELECT count(*) FROM {entity.table}").fetchone()[0]  # type: ignore[index]
            for entity in ENTITY_LIST
        }


def events(url: str) -> list[tuple[str, int, str, str | None, str | None]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT entity, entity_id, kind, status_from, status_to FROM workflow_events ORDER BY entity, entity_id"
        ).fetchall()


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_initial_sync_matches_simulator_counts(database_url: str, simulator: SimulatorServer) -> None:
    report = sync(sync_settings(simulator), database_url, "initial")

    assert report.succeeded, report.failed
    assert mirror_counts(database_url) == simulator.sim.counts()
    assert events(database_url) == []
    assert {r.entity: r.counts.created for r in report.results} == simulator.sim.counts()
    assert scalar(database_url, "SELECT count(*) FROM st_sync_log WHERE status = 'succeeded'") == len(ENTITIES)
    assert scalar(database_url, "SELECT count(*) FROM st_sync_state WHERE run_id IS NULL") == len(ENTITIES)


def test_initial_sync_starts_entities_in_tier_order(database_url: str, simulator: SimulatorServer) -> None:
    report = sync(sync_settings(simulator, concurrency=1), database_url, "initial")

    assert report.succeeded, report.failed
    tiers = [ENTITIES[r.entity].tier for r in report.results]
    assert tiers == sorted(tiers)
    with psycopg.connect(database_url) as conn:
        started = [row[0] for row in conn.execute("SELECT entity FROM st_sync_log ORDER BY started_at, id")]
    assert [ENTITIES[name].tier for name in started] == sorted(tiers)


def test_incremental_sync_finishes_each_tier_before_the_next(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial")

    report = sync(settings, database_url)

    assert report.succeeded, report.failed
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT entity, started_at, finished_at FROM st_sync_log WHERE run_id = %s", (report.run_id,)
        ).fetchall()
    started = {entity: start for entity, start, _ in rows}
    finished = {entity: end for entity, _, end in rows}
    for tier in (1, 2, 3):
        before = max(finished[e.name] for e in ENTITY_LIST if e.tier < tier)
        assert before <= min(started[e.name] for e in ENTITY_LIST if e.tier == tier)


def test_incremental_twice_changes_nothing(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial")

    report = sync(settings, database_url)

    assert report.succeeded, report.failed
    assert report.totals.created == 0
    assert report.totals.updated == 0
    exported = [r for r in report.results if ENTITIES[r.entity].export_path is not None]
    assert sum(r.counts.received for r in exported) == 0
    assert all(r.kind == "incremental" for r in report.results)
    assert events(database_url) == []


def test_incremental_picks_up_scripted_changes(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial")
    with psycopg.connect(database_url) as conn:
        sold, dismissed = [r[0] for r in conn.execute("SELECT id FROM st_estimates WHERE status = 'Open' ORDER BY id LIMIT 2")]
        membership = conn.execute("SELECT id FROM st_memberships WHERE status = 'Active' ORDER BY id LIMIT 1").fetchone()[0]  # type: ignore[index]
    sim = simulator.sim
    sim.apply("sell_estimate", id=sold)
    sim.apply("dismiss_estimate", id=dismissed)
    sim.apply("cancel_membership", id=membership)
    customer = sim.apply("create_customer", name="Grace Hopper")

    report = sync(settings, database_url)

    assert report.succeeded, report.failed
    assert mirror_counts(database_url) == sim.counts()
    found = events(database_url)
    assert ("estimate", sold, "status_changed", "Open", "Sold") in found
    assert ("estimate", dismissed, "status_changed", "Open", "Dismissed") in found
    assert ("membership", membership, "status_changed", "Active", "Canceled") in found
    assert ("customer", customer["id"], "created", None, None) in found
    created = sorted(e[0] for e in found if e[2] == "created")
    assert created == ["customer", "customer_contact", "customer_contact", "location", "location_contact"]
    assert len(found) == 8
    assert report.totals.created + report.totals.updated == 8


def test_incremental_first_run_loads_without_events(database_url: str, simulator: SimulatorServer) -> None:
    report = sync(sync_settings(simulator), database_url, entities=["customer", "job_type"])

    assert [r.kind for r in report.results] == ["initial", "initial"]
    assert events(database_url) == []
    assert mirror_counts(database_url)["customer"] == simulator.sim.counts()["customer"]


def test_entity_option_limits_sync(database_url: str, simulator: SimulatorServer) -> None:
    report = sync(sync_settings(simulator), database_url, "initial", entities=["estimate", "business_unit"])

    assert [r.entity for r in report.results] == ["business_unit", "estimate"]
    counts = mirror_counts(database_url)
    assert counts["estimate"] == simulator.sim.counts()["estimate"]
    assert counts["job"] == 0


def test_unknown_entity_rejected(database_url: str, simulator: SimulatorServer) -> None:
    with pytest.raises(SyncError, match="unknown entity 'estimates'"):
        sync(sync_settings(simulator), database_url, "initial", entities=["estimates"])


def test_full_sync_marks_missing_rows(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial")
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO st_customers (id, name, raw) VALUES (999999999, 'Gone', '{}')")
        conn.execute("UPDATE st_customers SET missing_since = now() WHERE id = (SELECT min(id) FROM st_customers)")
        conn.execute("DELETE FROM workflow_events")

    report = sync(settings, database_url, "full")

    assert report.succeeded, report.failed
    assert {r.entity: r.missing for r in report.results if r.missing} == {"customer": 1}
    assert scalar(database_url, "SELECT count(*) FROM st_customers WHERE missing_since IS NOT NULL") == 1
    assert scalar(database_url, "SELECT missing_since IS NOT NULL FROM st_customers WHERE id = 999999999")
    assert events(database_url) == [("customer", 999999999, "deleted", None, None)]
    assert scalar(database_url, "SELECT count(*) FROM st_sync_seen") == 0


def test_full_sync_fires_no_events_for_changes(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial")
    estimate = scalar(database_url, "SELECT id FROM st_estimates WHERE status = 'Open' ORDER BY id LIMIT 1")
    simulator.sim.apply("sell_estimate", id=estimate)

    report = sync(settings, database_url, "full")

    assert report.totals.updated == 1
    assert scalar(database_url, f"SELECT status FROM st_estimates WHERE id = {estimate}") == "Sold"
    assert events(database_url) == []


class FailingClient:
    """Delegates to a real client but fails every read of one entity."""

    def __init__(self, client: ServiceTitanClient, failing: str) -> None:
        self.client = client
        self.failing = failing
        self.tenant_id = client.tenant_id
        self.api_url = client.api_url

    async def __aenter__(self) -> FailingClient:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)

    def _check(self, entity: Entity) -> None:
        if entity.name == self.failing:
            raise TransientAPIError("retries exhausted: 503 Service Unavailable", status=503, endpoint="/jpm/v2/x")

    async def iter_export(self, entity: Entity, **options: Any) -> AsyncIterator[Any]:
        self._check(entity)
        async for page in self.client.iter_export(entity, **options):
            yield page

    async def iter_list(self, entity: Entity, **options: Any) -> AsyncIterator[Any]:
        self._check(entity)
        async for page in self.client.iter_list(entity, **options):
            yield page


def test_failed_entity_does_not_stop_others(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    client = FailingClient(ServiceTitanClient(settings.servicetitan), "job")

    report = sync(settings, database_url, "initial", client=client)

    assert not report.succeeded
    assert [r.entity for r in report.failed] == ["job"]
    assert "503" in (report.failed[0].error or "")
    counts = mirror_counts(database_url)
    expected = dict(simulator.sim.counts(), job=0)
    assert counts == expected
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, error FROM st_sync_log WHERE entity = 'job'").fetchone()
    assert row is not None
    assert row[0] == "failed"
    assert "503" in row[1]


def test_failed_initial_resumes_on_plain_sync(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial", client=FailingClient(ServiceTitanClient(settings.servicetitan), "job"))

    report = sync(settings, database_url, entities=["job"])

    assert [(r.kind, r.resumed, r.status) for r in report.results] == [("initial", True, "succeeded")]
    assert mirror_counts(database_url)["job"] == simulator.sim.counts()["job"]
    assert events(database_url) == []


def test_sync_completes_through_faults(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    faults = simulator.faults
    faults.storm(6, wait=0.01)
    faults.burst(6, status=502)
    faults.truncate(4)
    faults.expire_tokens()
    client = ServiceTitanClient(settings.servicetitan, backoff_base=0.01, backoff_cap=0.05)

    report = sync(settings, database_url, "initial", client=client)

    assert report.succeeded, report.failed
    assert mirror_counts(database_url) == simulator.sim.counts()
    assert client.stats.retries >= 6


def test_sync_lock_rejects_second_process(database_url: str, simulator: SimulatorServer) -> None:
    async def scenario() -> None:
        async with SyncLock(database_url) as lock:
            assert lock.acquired
            await run_sync(sync_settings(simulator), database_url, kind="initial")

    with pytest.raises(SyncError, match="another rulesd process is syncing"):
        asyncio.run(scenario())


def test_interrupted_log_rows_closed_as_failed(database_url: str, simulator: SimulatorServer) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO st_sync_log (run_id, entity, kind) VALUES (gen_random_uuid(), 'customer', 'initial')"
        )

    sync(sync_settings(simulator), database_url, "initial", entities=["business_unit"])

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, error FROM st_sync_log WHERE entity = 'customer'").fetchone()
    assert row == ("failed", "interrupted: the process stopped before this run finished")


def test_deadlocked_batch_written_again(database_url: str, simulator: SimulatorServer) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE SEQUENCE test_deadlock_once")
        conn.execute(
            "CREATE FUNCTION test_deadlock_once() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF nextval('test_deadlock_once') = 1 THEN"
            " RAISE EXCEPTION 'simulated deadlock' USING ERRCODE = 'deadlock_detected'; END IF;"
            " RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER test_deadlock_once AFTER INSERT ON st_customers"
            " FOR EACH STATEMENT EXECUTE FUNCTION test_deadlock_once()"
        )

    report = sync(sync_settings(simulator), database_url, "initial", entities=["customer"])

    assert report.succeeded, report.failed
    assert mirror_counts(database_url)["customer"] == simulator.sim.counts()["customer"]
    assert scalar(database_url, "SELECT created FROM st_sync_log WHERE entity = 'customer'") == simulator.sim.counts()["customer"]


def test_sync_refuses_another_tenant(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial")
    other = dataclasses.replace(settings.servicetitan, tenant_id=settings.servicetitan.tenant_id + 1)

    with pytest.raises(SyncError, match=r"mirrors ServiceTitan tenant \d+ .*not tenant \d+"):
        sync(dataclasses.replace(settings, servicetitan=other), database_url)

    assert scalar(database_url, "SELECT count(*) FROM workflow_events") == 0
    assert scalar(database_url, "SELECT tenant_id FROM st_tenant") == settings.servicetitan.tenant_id


class RecordingProgress(NullProgress):
    """Keeps the total each entity started with."""

    def __init__(self) -> None:
        self.totals: dict[str, int | None] = {}

    def start(self, entity: str, kind: str, total: int | None) -> None:
        self.totals[entity] = total


def test_full_sync_starts_with_row_estimate(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    sync(settings, database_url, "initial")
    progress = RecordingProgress()

    asyncio.run(run_sync(settings, database_url, kind="full", entities=["customer"], progress=progress))

    # Statistics may lag a little behind the table, so only the order of magnitude is checked.
    total = progress.totals["customer"]
    assert total is not None
    assert simulator.sim.counts()["customer"] // 2 <= total <= simulator.sim.counts()["customer"] * 2


def test_wrong_secret_fails_once_before_any_entity(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    wrong = dataclasses.replace(settings.servicetitan, client_secret="wrong-secret")

    with pytest.raises(AuthenticationError) as raised:
        sync(dataclasses.replace(settings, servicetitan=wrong), database_url, "initial")

    assert "SERVICE_TITAN_CLIENT_SECRET" in (raised.value.hint or "")
    assert "wrong-secret" not in str(raised.value)
    assert scalar(database_url, "SELECT count(*) FROM st_sync_log") == 0


def test_wrong_app_key_failure_names_app_key(database_url: str, simulator: SimulatorServer) -> None:
    settings = sync_settings(simulator)
    wrong = dataclasses.replace(settings.servicetitan, app_key="wrong-key")

    report = sync(dataclasses.replace(settings, servicetitan=wrong), database_url, "initial", entities=["job"])

    (result,) = report.results
    assert result.status == "failed"
    assert "SERVICE_TITAN_APP_KEY" in (result.error or "")
    assert "wrong-key" not in (result.error or "")
