"""Conformance of the simulator and the client with ServiceTitan's published OpenAPI documents.

The documents are not part of this repository. Set RULESD_OPENAPI_DIR to
the folder holding them (crm-v2.json, jpm-v2.json ...); without it the
tests skip.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from rulesd.servicetitan.catalog import ENTITY_LIST, Entity
from rulesd.servicetitan.client import ServiceTitanClient
from rulesd.servicetitan.simulator import SimulatorServer
from rulesd.servicetitan.simulator.testing import client_settings, running_simulator

OPENAPI_DIR_ENV = "RULESD_OPENAPI_DIR"


def openapi_dir() -> Path:
    value = os.environ.get(OPENAPI_DIR_ENV)
    if not value:
        pytest.skip(f"{OPENAPI_DIR_ENV} is not set: no ServiceTitan OpenAPI documents to check against")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{OPENAPI_DIR_ENV}={value} is not a directory")
    return path


@cache
def load_spec(directory: str, name: str) -> dict[str, Any]:
    return json.loads((Path(directory) / name).read_text())


def operation(entity: Entity, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (the GET operation for ``path``, its whole document)."""
    directory = openapi_dir()
    spec_path = directory / entity.spec_file
    if not spec_path.exists():
        pytest.fail(f"{spec_path} is missing from {OPENAPI_DIR_ENV}")
    spec = load_spec(str(directory), entity.spec_file)
    key = "/tenant/{tenant}/" + path
    try:
        return spec["paths"][key]["get"], spec
    except KeyError:
        pytest.fail(f"{entity.spec_file} declares no GET {key}")


def response_validator(op: dict[str, Any], spec: dict[str, Any]) -> Draft202012Validator:
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    # Local $refs ("#/components/schemas/...") resolve against this root.
    return Draft202012Validator({**schema, "components": spec["components"]})


class RecordingTransport(httpx.AsyncBaseTransport):
    """Pass requests through and keep each API request with its response body."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[tuple[httpx.Request, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if "/tenant/" in request.url.path:
            self.exchanges.append((request, body))
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def conformance_server() -> Iterator[SimulatorServer]:
    with running_simulator(seed=5, customers=120) as server:
        yield server


def fetch_first_page(
    server: SimulatorServer, entity: Entity, kind: str
) -> list[tuple[httpx.Request, bytes]]:
    transport = RecordingTransport()

    async def scenario() -> None:
        settings = client_settings(server, page_size=25)
        async with ServiceTitanClient(settings, transport=transport) as client:
            if kind == "export":
                async for _ in client.iter_export(entity, include_recent_changes=True):
                    break
            else:
                since = datetime(2000, 1, 1, tzinfo=timezone.utc)
                options: dict[str, Any] = {}
                if entity.list_requires_filter:
                    options["modified_on_or_after"] = since
                    options["modified_before"] = datetime.now(timezone.utc)
                async for _ in client.iter_list(entity, **options):
                    break

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    return transport.exchanges


ENDPOINTS = [
    pytest.param(entity, kind, id=f"{entity.name}-{kind}")
    for entity in ENTITY_LIST
    for kind in ("list", "export")
    if kind == "list" or entity.export_path
]


@pytest.mark.parametrize(("entity", "kind"), ENDPOINTS)
def test_simulator_page_matches_openapi_schema(
    conformance_server: SimulatorServer, entity: Entity, kind: str
) -> None:
    path = entity.list_path if kind == "list" else entity.export_path
    assert path is not None
    op, spec = operation(entity, path)
    exchanges = fetch_first_page(conformance_server, entity, kind)
    assert exchanges, "the client sent no API request"

    request, body = exchanges[0]
    page = json.loads(body)
    assert page["data"], f"the simulator returned an empty first page for {request.url.path}"
    errors = sorted(response_validator(op, spec).iter_errors(page), key=lambda e: list(e.path))
    messages = [f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:10]]
    assert messages == []


@pytest.mark.parametrize(("entity", "kind"), ENDPOINTS)
def test_client_sends_only_declared_params(
    conformance_server: SimulatorServer, entity: Entity, kind: str
) -> None:
    path = entity.list_path if kind == "list" else entity.export_path
    assert path is not None
    op, _ = operation(entity, path)
    declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
    for request, _ in fetch_first_page(conformance_server, entity, kind):
        sent = set(request.url.params.keys())
        assert sent - declared == set(), f"{request.url.path} sends undeclared parameters"
