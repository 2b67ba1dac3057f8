"""The sync benchmark's peer: dlt's REST API source loading the simulator tenant into Postgres.

``benchmarks/sync_bench.py`` runs this in a subprocess with the simulator's
address and credentials in ``SIMULATOR_DETAILS``. It reads every catalog
entity the way rulesd does: export feeds where there is one, list
endpoints otherwise. It upserts on ``id`` with dlt's ``merge``
disposition, because a mirror must not duplicate rows on a re-run. Nested
objects stay JSON columns (``max_table_nesting=0``), the closest match to
rulesd's ``raw jsonb``. Prints one JSON line: records loaded and seconds.
Needs ``pip install "dlt[postgres]"`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dlt
from dlt.sources.helpers.rest_client.auth import OAuth2ClientCredentials
from dlt.sources.helpers.rest_client.paginators import BasePaginator
from dlt.sources.rest_api import rest_api_source
from requests import Request, Response

from rulesd.servicetitan.catalog import ENTITY_LIST

PAGE_SIZE = 5000  # the same list page size rulesd's benchmark uses


class ExportPaginator(BasePaginator):
    """Follows ServiceTitan's export feed: ``from=continueFrom`` while ``hasMore`` is true."""

    def __init__(self) -> None:
        super().__init__()
        self.token: str | None = None

    def update_state(self, response: Response, data: list[Any] | None = None) -> None:
        body = response.json()
        self.token = body.get("continueFrom")
        self._has_next_page = bool(body.get("hasMore"))

    def update_request(self, request: Request) -> None:
        request.params = dict(request.params or {}, **{"from": self.token})


class HasMorePaginator(BasePaginator):
    """Pages a list endpoint by ``page`` number while ``hasMore`` is true."""

    def __init__(self) -> None:
        super().__init__()
        self.page = 1

    def update_state(self, response: Response, data: list[Any] | None = None) -> None:
        self._has_next_page = bool(response.json().get("hasMore"))
        self.page += 1

    def update_request(self, request: Request) -> None:
        request.params = dict(request.params or {}, page=self.page)


def resources(tenant_id: int) -> list[dict[str, Any]]:
    configured = []
    for entity in ENTITY_LIST:
        base = f"{entity.module}/v2/tenant/{tenant_id}"
        if entity.export_path is not None:
            params: dict[str, Any] = {}
            if entity.name in ("appointment", "appointment_assignment"):
                params["active"] = "Any"
            endpoint = {"path": f"{base}/{entity.export_path}", "params": params, "paginator": ExportPaginator()}
        else:
            params = {"pageSize": PAGE_SIZE, "page": 1}
            if entity.active_param == "active":
                params["active"] = "Any"
            endpoint = {"path": f"{base}/{entity.list_path}", "params": params, "paginator": HasMorePaginator()}
        endpoint["data_selector"] = "data"
        configured.append(
            {"name": entity.table, "endpoint": endpoint, "primary_key": "id", "write_disposition": "merge", "max_table_nesting": 0}
        )
    return configured


def dlt_credentials(database_url: str) -> str:
    """Return ``database_url`` with a placeholder password when it has none.

    dlt's PostgresCredentials rejects a URL without a password, even for a
    server on loopback with trust authentication, which ignores it.
    """
    parts = urlsplit(database_url)
    if parts.password is not None or parts.username is None:
        return database_url
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{parts.username}:unused@{host}{port}"))


def main() -> None:
    parser = argparse.ArgumentParser(description="Load the simulator tenant with dlt's REST API source.")
    parser.add_argument("--database-url", required=True)
    arguments = parser.parse_args()
    details = json.loads(os.environ["SIMULATOR_DETAILS"])

    source = rest_api_source(
        {
            "client": {
                "base_url": details["base_url"] + "/",
                "headers": {"ST-App-Key": details["app_key"]},
                "auth": OAuth2ClientCredentials(
                    access_token_url=details["base_url"] + "/connect/token",
                    client_id=details["client_id"],
                    client_secret=details["client_secret"],
                ),
            },
            "resources": resources(int(details["tenant_id"])),
        },
        max_table_nesting=0,
    )
    with tempfile.TemporaryDirectory() as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name="rulesd_sync_peer",
            destination=dlt.destinations.postgres(credentials=dlt_credentials(arguments.database_url)),
            dataset_name="dlt_peer",
            pipelines_dir=pipelines_dir,
        )
        started = time.monotonic()
        pipeline.run(source)
        seconds = time.monotonic() - started
        counts = pipeline.last_trace.last_normalize_info.row_counts  # type: ignore[union-attr]
    records = sum(count for table, count in counts.items() if not table.startswith("_dlt"))
    print(json.dumps({"records": records, "seconds": seconds}))


if __name__ == "__main__":
    main()
