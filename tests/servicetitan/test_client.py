"""The real client over HTTP against the simulator: paging, export resume, faults, auth."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest

from rulesd.config import ServiceTitanSettings
from rulesd.errors import AuthenticationError, ConfigError, TransientAPIError
from rulesd.servicetitan.catalog import ENTITIES, Entity
from rulesd.servicetitan.client import ServiceTitanClient
from rulesd.servicetitan.simulator import Behaviours, SimulatorServer
from rulesd.servicetitan.simulator.testing import client_settings, running_simulator

T = TypeVar("T")
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=120))


async def list_ids(client: ServiceTitanClient, entity: Entity, **options: Any) -> list[int]:
    ids: list[int] = []
    async for page in client.iter_list(entity, **options):
        ids.extend(record["id"] for record in page.records)
    return ids


async def export_ids(
    client: ServiceTitanClient, entity: Entity, continue_from: str | None = None
) -> tuple[list[int], str]:
    ids: list[int] = []
    token = continue_from or ""
    async for page in client.iter_export(entity, continue_from=continue_from):
        ids.extend(record["id"] for record in page.records)
        token = page.continue_from
    return ids, token


def test_list_paging_large_tenant_returns_each_record_once() -> None:
    async def scenario(server: SimulatorServer) -> tuple[list[int], int | None]:
        settings = client_settings(server, page_size=1000)
        async with ServiceTitanClient(settings) as client:
            ids: list[int] = []
            total = None
            async for page in client.iter_list(ENTITIES["customer"]):
                ids.extend(record["id"] for record in page.records)
                if page.page == 1:
                    total = page.total_count
            return ids, total

    with running_simulator(seed=11, customers=20_000) as server:
        ids, total = run(scenario(server))
        expected = server.sim.counts()["customer"]
    assert len(ids) == expected == 20_000
    assert len(set(ids)) == len(ids)
    assert total == expected


def test_list_includes_inactive_records(server: SimulatorServer) -> None:
    async def scenario() -> list[int]:
        async with ServiceTitanClient(client_settings(server)) as client:
            return await list_ids(client, ENTITIES["customer"])

    ids = run(scenario())
    table = server.sim.table("customer")
    inactive = [table.record_id(i) for i in range(table.count) if not table.active[i]]
    assert inactive, "the generated tenant should contain inactive customers"
    assert set(inactive) <= set(ids)
    assert len(ids) == table.count


def test_list_ids_filter_chunks_beyond_fifty(server: SimulatorServer) -> None:
    table = server.sim.table("job")
    wanted = [table.record_id(i) for i in range(0, 120)]

    async def scenario() -> list[int]:
        async with ServiceTitanClient(client_settings(server)) as client:
            return await list_ids(client, ENTITIES["job"], ids=wanted)

    assert sorted(run(scenario())) == wanted


def test_list_modified_window_filters(server: SimulatorServer) -> None:
    sim = server.sim
    before = sim.now()
    changed = sim.apply("create_customer", name="Window Test")

    async def scenario() -> list[int]:
        from rulesd.servicetitan.records import parse_datetime

        after = parse_datetime(changed["modifiedOn"])
        assert after is not None
        async with ServiceTitanClient(client_settings(server)) as client:
            return await list_ids(
                client, ENTITIES["customer"], modified_on_or_after=after,
                modified_before=after + timedelta(microseconds=1),
            )

    assert before < sim.now()
    assert run(scenario()) == [changed["id"]]


def test_export_full_feed_returns_every_record(server: SimulatorServer) -> None:
    async def scenario() -> list[int]:
        async with ServiceTitanClient(client_settings(server)) as client:
            return (await export_ids(client, ENTITIES["appointment"]))[0]

    ids = run(scenario())
    assert len(ids) == len(set(ids)) == server.sim.counts()["appointment"]


def test_export_resumes_from_saved_token(server: SimulatorServer) -> None:
    sim = server.sim
    estimates = sim.table("estimate")
    open_estimate = next(
        estimates.record_id(i) for i in range(estimates.count)
        if sim.status_name("estimate", i) == "Open"
    )

    async def first_run() -> tuple[list[int], str]:
        async with ServiceTitanClient(client_settings(server)) as client:
            return await export_ids(client, ENTITIES["estimate"])

    async def second_run(token: str) -> tuple[list[int], str]:
        async with ServiceTitanClient(client_settings(server)) as client:
            return await export_ids(client, ENTITIES["estimate"], continue_from=token)

    ids, token = run(first_run())
    assert len(ids) == estimates.count

    unchanged, token = run(second_run(token))
    assert unchanged == []

    sold = sim.apply("sell_estimate", id=open_estimate)
    created = sim.apply("create_estimate", job_id=sold["jobId"], subtotal="1500.00")
    changed, _ = run(second_run(token))
    assert changed == [open_estimate, created["id"]]


def test_export_resume_mid_feed_neither_skips_nor_repeats() -> None:
    async def scenario(server: SimulatorServer) -> list[int]:
        async with ServiceTitanClient(client_settings(server)) as client:
            seen: list[int] = []
            token = None
            async for page in client.iter_export(ENTITIES["job"]):
                seen.extend(r["id"] for r in page.records)
                token = page.continue_from
                break
            # A job served on the first page changes, so it must come back once.
            changed.append(server.sim.apply("create_estimate", job_id=seen[3])["jobId"])
            rest, _ = await export_ids(client, ENTITIES["job"], continue_from=token)
            return seen + rest

    changed: list[int] = []
    with running_simulator(customers=80, behaviours=Behaviours(export_page_size=40)) as server:
        ids = run(scenario(server))
        jobs = server.sim.table("job")
        expected = {jobs.record_id(i) for i in range(jobs.count)}
    assert len(ids) > 40
    assert set(ids) == expected
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert repeated == changed


def _full_export(server: SimulatorServer, entity: str, **settings: Any) -> tuple[list[int], Any]:
    async def scenario() -> tuple[list[int], Any]:
        async with ServiceTitanClient(client_settings(server, **settings), **FAST) as client:
            ids, _ = await export_ids(client, ENTITIES[entity])
            return ids, client.stats

    return run(scenario())


def test_client_survives_429_storm(server: SimulatorServer) -> None:
    server.faults.storm(6, wait=0)
    ids, stats = _full_export(server, "customer")
    assert sorted(ids) == sorted(set(ids))
    assert len(ids) == server.sim.counts()["customer"]
    assert stats.throttled == 6


def test_client_reads_wait_from_429_title(server: SimulatorServer) -> None:
    server.faults.retry_after = False
    server.faults.storm(1, wait=0)
    ids, stats = _full_export(server, "customer")
    assert len(ids) == server.sim.counts()["customer"]
    assert stats.throttled == 1


def test_client_survives_server_rate_limit(server: SimulatorServer) -> None:
    server.faults.rate_limit = 5
    server.faults.throttle_wait = 0.2

    async def scenario() -> list[list[int]]:
        settings = client_settings(server, page_size=50, rate_limit=8.0)
        async with ServiceTitanClient(settings, **FAST) as client:
            return await asyncio.gather(*(list_ids(client, ENTITIES[name]) for name in
                                          ("customer", "location", "job", "invoice")))

    results = run(scenario())
    counts = server.sim.counts()
    assert [len(r) for r in results] == [counts[n] for n in ("customer", "location", "job", "invoice")]
    assert server.stats.throttled > 0


def test_client_survives_5xx_burst(server: SimulatorServer) -> None:
    server.faults.burst(4, status=503)
    ids, stats = _full_export(server, "invoice")
    assert len(ids) == len(set(ids)) == server.sim.counts()["invoice"]
    assert stats.retries == 4


def test_client_survives_truncated_bodies(server: SimulatorServer) -> None:
    server.faults.truncate(3)
    ids, stats = _full_export(server, "payment")
    assert len(ids) == len(set(ids)) == server.sim.counts()["payment"]
    assert server.stats.truncated >= 3
    assert stats.retries == 3


def test_client_survives_random_faults(server: SimulatorServer) -> None:
    server.faults.error_rate = 0.2
    server.faults.truncate_rate = 0.1
    ids, _ = _full_export(server, "appointment_assignment", max_retries=30)
    assert len(ids) == len(set(ids)) == server.sim.counts()["appointment_assignment"]


def test_client_refreshes_token_expired_mid_run() -> None:
    async def scenario(server: SimulatorServer) -> tuple[list[int], Any]:
        async with ServiceTitanClient(client_settings(server), **FAST) as client:
            ids: list[int] = []
            async for page in client.iter_export(ENTITIES["location"]):
                ids.extend(r["id"] for r in page.records)
                server.faults.expire_tokens()
            return ids, client.stats

    with running_simulator(customers=60, behaviours=Behaviours(export_page_size=20)) as server:
        ids, stats = run(scenario(server))
        expected = server.sim.counts()["location"]
        rejected = server.stats.unauthorized
    assert len(ids) == len(set(ids)) == expected
    assert stats.token_requests >= 3
    assert rejected == stats.token_requests - 1


def test_client_gives_up_after_max_retries(server: SimulatorServer) -> None:
    server.faults.burst(100, status=502)

    async def scenario() -> None:
        async with ServiceTitanClient(client_settings(server, max_retries=2), **FAST) as client:
            await export_ids(client, ENTITIES["customer"])

    with pytest.raises(TransientAPIError) as caught:
        run(scenario())
    assert caught.value.status == 502
    assert caught.value.endpoint == "/crm/v2/tenant/1000/export/customers"
    assert "3 attempts" in caught.value.message


def test_failure_message_names_host_and_port(server: SimulatorServer) -> None:
    server.faults.burst(100, status=502)

    async def scenario() -> None:
        async with ServiceTitanClient(client_settings(server, max_retries=1), **FAST) as client:
            await export_ids(client, ENTITIES["customer"])

    with pytest.raises(TransientAPIError) as caught:
        run(scenario())
    assert caught.value.endpoint == "/crm/v2/tenant/1000/export/customers"
    assert f"GET {server.base_url}/crm/v2/tenant/1000/export/customers failed after 2 attempts" in caught.value.message


def test_wrong_credentials_give_one_clear_error(server: SimulatorServer) -> None:
    async def scenario() -> None:
        settings = client_settings(server, client_secret="wrong-secret")
        async with ServiceTitanClient(settings, **FAST) as client:
            await export_ids(client, ENTITIES["customer"])

    with pytest.raises(AuthenticationError) as caught:
        run(scenario())
    message = str(caught.value)
    assert "rejected the client credentials" in message
    assert "invalid_client" in message
    assert "wrong-secret" not in message
    assert server.stats.token_requests >= 1
    assert_credentials_hint(caught.value.hint)


def assert_credentials_hint(hint: str | None) -> None:
    assert hint is not None
    assert "SERVICE_TITAN_CLIENT_ID" in hint
    assert "SERVICE_TITAN_CLIENT_SECRET" in hint
    assert "SERVICE_TITAN_ENVIRONMENT" in hint
    assert "production" in hint
    assert "integration" in hint


def test_check_credentials_rejects_wrong_secret(server: SimulatorServer) -> None:
    async def scenario() -> None:
        settings = client_settings(server, client_secret="wrong-secret")
        async with ServiceTitanClient(settings, **FAST) as client:
            await client.check_credentials()

    api_requests = server.stats.requests
    token_requests = server.stats.token_requests
    with pytest.raises(AuthenticationError) as caught:
        run(scenario())
    assert caught.value.status == 400
    assert "invalid_client" in caught.value.message
    assert "wrong-secret" not in str(caught.value)
    assert_credentials_hint(caught.value.hint)
    assert server.stats.token_requests == token_requests + 1
    assert server.stats.requests == api_requests


def test_check_credentials_token_reused_by_requests(server: SimulatorServer) -> None:
    async def scenario() -> Any:
        async with ServiceTitanClient(client_settings(server), **FAST) as client:
            await client.check_credentials()
            checked = client.stats.token_requests, client.stats.requests
            await list_ids(client, ENTITIES["business_unit"])
            return checked, client.stats

    (token_requests, requests), stats = run(scenario())
    assert token_requests == 1
    assert requests == 0
    assert stats.token_requests == 1
    assert stats.requests == 1


def test_wrong_app_key_raises_authentication_error(server: SimulatorServer) -> None:
    async def scenario() -> None:
        async with ServiceTitanClient(client_settings(server, app_key="nope"), **FAST) as client:
            await export_ids(client, ENTITIES["customer"])

    with pytest.raises(AuthenticationError) as caught:
        run(scenario())
    assert caught.value.status == 401
    assert caught.value.trace_id
    assert "even with a new access token" in caught.value.message
    assert "rejected the access token" not in caught.value.message
    assert "SERVICE_TITAN_APP_KEY" in (caught.value.hint or "")
    assert "ST-App-Key" in (caught.value.hint or "")
    assert f"tenant {server.tenant_id}" in (caught.value.hint or "")


def test_missing_credentials_raise_config_error() -> None:
    settings = ServiceTitanSettings(tenant_id=1, client_id="x")
    with pytest.raises(ConfigError) as caught:
        ServiceTitanClient(settings)
    assert "SERVICE_TITAN_CLIENT_SECRET" in caught.value.message
    assert "SERVICE_TITAN_APP_KEY" in caught.value.message


def test_token_fetched_once_for_concurrent_requests(server: SimulatorServer) -> None:
    async def scenario() -> Any:
        async with ServiceTitanClient(client_settings(server)) as client:
            await asyncio.gather(*(list_ids(client, ENTITIES[name]) for name in
                                   ("business_unit", "technician", "employee", "job_type",
                                    "campaign", "tag_type")))
            return client.stats

    stats = run(scenario())
    assert stats.token_requests == 1
    assert stats.requests == 6


def test_requests_carry_bearer_token_and_app_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/connect/token":
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 900})
        return httpx.Response(200, json={"page": 1, "pageSize": 50, "hasMore": False,
                                         "totalCount": 0, "data": []})

    settings = ServiceTitanSettings(
        environment="integration", tenant_id=42, client_id="cid", client_secret="sec",
        app_key="key", page_delay=timedelta(0),
    )

    async def scenario() -> None:
        async with ServiceTitanClient(settings, transport=httpx.MockTransport(handler)) as client:
            await list_ids(client, ENTITIES["invoice"])

    run(scenario())
    token_request, api_request = seen
    assert str(token_request.url) == "https://auth-integration.servicetitan.io/connect/token"
    assert api_request.url.host == "api-integration.servicetitan.io"
    assert api_request.url.path == "/accounting/v2/tenant/42/invoices"
    assert api_request.headers["Authorization"] == "Bearer tok"
    assert api_request.headers["ST-App-Key"] == "key"
    assert api_request.url.params["activeState"] == "All"
    assert api_request.url.params["pageSize"] == "5000"
    assert "active" not in api_request.url.params


def test_contacts_list_requires_date_filter(server: SimulatorServer) -> None:
    async def scenario() -> None:
        async with ServiceTitanClient(client_settings(server)) as client:
            await list_ids(client, ENTITIES["customer_contact"])

    with pytest.raises(ValueError, match="requires a modified date filter"):
        run(scenario())
