"""Helpers for engine tests: mirror rows, rule files, a recording executor and an in-process engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from rulesd.config import EngineSettings, Settings
from rulesd.engine.clock import Clock, FakeClock
from rulesd.engine.execution import ExecutionEngine
from rulesd.engine.executor import StepRequest, StepResult
from rulesd.engine.triggers import TriggerEngine
from rulesd.engine.watcher import RuleHolder

REPOSITORY = Path(__file__).resolve().parents[2]
ESTIMATE_RULE = REPOSITORY / "rules" / "estimate-follow-up.yaml"


def fast_settings(**engine: Any) -> Settings:
    """Settings whose engine polls rarely (so NOTIFY is what wakes it) and ticks fast."""
    values: dict[str, Any] = {
        "poll_interval": timedelta(hours=1),
        "tick": timedelta(milliseconds=200),
        "lease": timedelta(seconds=30),
        "shutdown_timeout": timedelta(seconds=5),
    }
    values.update(engine)
    return replace(Settings(), engine=replace(EngineSettings(), **values))


def insert_customer(conn: psycopg.Connection[Any], customer_id: int, **columns: Any) -> None:
    values = {"name": f"Customer {customer_id}", "do_not_mail": False, "do_not_service": False, **columns}
    _insert(conn, "st_customers", customer_id, values)


def insert_estimate(conn: psycopg.Connection[Any], estimate_id: int, customer_id: int, **columns: Any) -> None:
    values = {"customer_id": customer_id, "status": "Open", "subtotal": 1000, "tax": 0, "name": "New furnace", **columns}
    _insert(conn, "st_estimates", estimate_id, values)


def update_row(conn: psycopg.Connection[Any], table: str, row_id: int, **columns: Any) -> None:
    assignments = psycopg.sql.SQL(", ").join(
        psycopg.sql.SQL("{} = %s").format(psycopg.sql.Identifier(name)) for name in columns
    )
    conn.execute(
        psycopg.sql.SQL("UPDATE {} SET {} WHERE id = %s").format(psycopg.sql.Identifier(table), assignments),
        (*columns.values(), row_id),
    )


def _insert(conn: psycopg.Connection[Any], table: str, row_id: int, values: dict[str, Any]) -> None:
    names = ["id", "raw", *values]
    query = psycopg.sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        psycopg.sql.Identifier(table),
        psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(name) for name in names),
        psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() for _ in names),
    )
    conn.execute(query, (row_id, json.dumps({"id": row_id}), *values.values()))


@dataclass
class CountingExecutor:
    """Records every request; returns the scripted outcomes in order, then ``done``."""

    outcomes: list[StepResult] = field(default_factory=list)
    requests: list[StepRequest] = field(default_factory=list)

    async def execute(self, request: StepRequest) -> StepResult:
        self.requests.append(request)
        if self.outcomes:
            return self.outcomes.pop(0)
        return StepResult(outcome="done", detail="recorded by the test", transcript=[{"type": "action", "text": request.action}])

    def steps(self) -> list[tuple[int, str]]:
        return [(request.entity_id, request.step.name) for request in self.requests]


@dataclass
class Engines:
    pool: AsyncConnectionPool[Any]
    holder: RuleHolder
    triggers: TriggerEngine
    execution: ExecutionEngine


@asynccontextmanager
async def open_engines(
    database_url: str,
    rule_paths: list[Path],
    executor: Any,
    clock: Clock | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[Engines]:
    """Open both engines in-process, without their loops, for tests that drive passes by hand."""
    import uuid

    settings = settings or fast_settings()
    clock = clock or FakeClock()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
    await pool.open(wait=True)
    try:
        holder = RuleHolder(rule_paths, pool, clock)
        await holder.reload(initial=True)
        triggers = TriggerEngine(pool, holder.get, clock, settings.engine)
        execution = ExecutionEngine(
            pool, holder.get, clock, settings.engine, executor,
            owner=uuid.uuid4(), database_url=database_url, timezone="America/Chicago",
        )
        yield Engines(pool, holder, triggers, execution)
    finally:
        await pool.close()
