"""Shared set-up for the engine benchmarks: a scratch database and an in-process daemon."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rulesd.config import EngineSettings, Settings
from rulesd.db import migrate
from rulesd.db.server import start_embedded


@contextmanager
def scratch_database(server_url: str | None) -> Iterator[str]:
    """Yield the URL of a new, migrated database, on ``server_url`` or an embedded Postgres; drop it after."""
    root: Path | None = None
    server = None
    if server_url is None:
        root = Path(tempfile.mkdtemp(prefix="rulesd-bench-pg-"))
        server = start_embedded(root / "pgdata")
        server_url = make_conninfo(server.url, dbname="postgres")
    name = f"rulesd_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        admin = make_conninfo(server_url, dbname=conninfo_to_dict(server_url).get("dbname") or "postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if server is not None:
            server.close()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def bench_settings(**engine: Any) -> Settings:
    values: dict[str, Any] = {"flood_limit": 10_000_000, "poll_interval": timedelta(seconds=30)}
    values.update(engine)
    return replace(Settings(), engine=replace(EngineSettings(), **values))


def insert_customer(conn: psycopg.Connection[Any], customer_id: int) -> None:
    conn.execute(
        "INSERT INTO st_customers (id, name, do_not_mail, do_not_service, raw) VALUES (%s, %s, false, false, %s)",
        (customer_id, f"Customer {customer_id}", json.dumps({"id": customer_id})),
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
