"""The sync log and each entity's checkpoint: ``st_sync_log``, ``st_sync_state`` and ``st_sync_seen``.

Every function here runs inside the caller's transaction, so a batch's
rows, its checkpoint and its log counts commit together or not at all.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from rulesd.sync.upsert import UpsertCounts

logger = logging.getLogger(__name__)

SyncKind = Literal["initial", "incremental", "full"]

INTERRUPTED_ERROR = "interrupted: the process stopped before this run finished"


@dataclass(frozen=True)
class EntityState:
    """An entity's saved sync position.

    ``continue_from`` and ``watermark`` are the incremental cursor: the
    export token after the last completed read, and the latest
    ``modifiedOn`` in the mirror table then. ``run_*`` describe an initial
    or full read that has not finished.
    """

    entity: str
    watermark: datetime | None = None
    continue_from: str | None = None
    last_kind: str | None = None
    last_finished_at: datetime | None = None
    run_id: uuid.UUID | None = None
    run_kind: SyncKind | None = None
    run_cursor: str | None = None

    @property
    def ever_completed(self) -> bool:
        return self.last_finished_at is not None


async def load_state(conn: psycopg.AsyncConnection[Any], entity: str) -> EntityState:
    """Return ``entity``'s saved state, or an empty one when it was never synced."""
    cur = await conn.execute(
        "SELECT watermark, continue_from, last_kind, last_finished_at, run_id, run_kind, run_cursor"
        " FROM st_sync_state WHERE entity = %s",
        (entity,),
    )
    row = await cur.fetchone()
    if row is None:
        return EntityState(entity)
    return EntityState(entity, *row)


async def begin_read(
    conn: psycopg.AsyncConnection[Any], entity: str, run_id: uuid.UUID, kind: SyncKind
) -> None:
    """Record that a fresh initial or full read of ``entity`` starts from the first record."""
    await conn.execute(
        "INSERT INTO st_sync_state (entity, run_id, run_kind, run_cursor, run_started_at, last_kind, last_started_at)"
        " VALUES (%(entity)s, %(run_id)s, %(kind)s, NULL, now(), %(kind)s, now())"
        " ON CONFLICT (entity) DO UPDATE SET run_id = excluded.run_id, run_kind = excluded.run_kind,"
        " run_cursor = NULL, run_started_at = now(), last_kind = excluded.last_kind,"
        " last_started_at = now(), updated_at = now()",
        {"entity": entity, "run_id": run_id, "kind": kind},
    )
    await conn.execute("DELETE FROM st_sync_seen WHERE entity = %s", (entity,))


async def mark_started(conn: psycopg.AsyncConnection[Any], entity: str, kind: SyncKind) -> None:
    await conn.execute(
        "INSERT INTO st_sync_state (entity, last_kind, last_started_at) VALUES (%s, %s, now())"
        " ON CONFLICT (entity) DO UPDATE SET last_kind = excluded.last_kind, last_started_at = now(),"
        " updated_at = now()",
        (entity, kind),
    )


async def save_run_cursor(conn: psycopg.AsyncConnection[Any], entity: str, cursor: str | None) -> None:
    """Save how far the unfinished initial or full read got."""
    await conn.execute(
        "UPDATE st_sync_state SET run_cursor = %s, updated_at = now() WHERE entity = %s",
        (cursor, entity),
    )


async def save_incremental_cursor(conn: psycopg.AsyncConnection[Any], entity: str, continue_from: str) -> None:
    """Advance an export feed's incremental cursor after a batch."""
    await conn.execute(
        "UPDATE st_sync_state SET continue_from = %s, updated_at = now() WHERE entity = %s",
        (continue_from, entity),
    )


async def finish_read(
    conn: psycopg.AsyncConnection[Any],
    entity: str,
    *,
    continue_from: str | None,
    watermark: datetime | None,
) -> None:
    """Close a completed read: the incremental cursor moves to where it ended."""
    await conn.execute(
        "UPDATE st_sync_state SET continue_from = coalesce(%s, continue_from),"
        " watermark = coalesce(%s, watermark), run_id = NULL, run_kind = NULL, run_cursor = NULL,"
        " run_started_at = NULL, last_finished_at = now(), updated_at = now() WHERE entity = %s",
        (continue_from, watermark, entity),
    )


async def start_log(conn: psycopg.AsyncConnection[Any], run_id: uuid.UUID, entity: str, kind: SyncKind) -> int:
    cur = await conn.execute(
        "INSERT INTO st_sync_log (run_id, entity, kind) VALUES (%s, %s, %s) RETURNING id",
        (run_id, entity, kind),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def add_log_counts(conn: psycopg.AsyncConnection[Any], log_id: int, counts: UpsertCounts) -> None:
    await conn.execute(
        "UPDATE st_sync_log SET fetched = fetched + %s, created = created + %s, updated = updated + %s,"
        " unchanged = unchanged + %s, failed = failed + %s WHERE id = %s",
        (counts.received, counts.created, counts.updated, counts.unchanged, counts.failed, log_id),
    )


async def finish_log(
    conn: psycopg.AsyncConnection[Any],
    log_id: int,
    *,
    status: Literal["succeeded", "failed"],
    error: str | None = None,
    watermark: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE st_sync_log SET status = %s, error = %s, watermark = %s, finished_at = now() WHERE id = %s",
        (status, error, watermark, log_id),
    )


async def fail_interrupted_runs(conn: psycopg.AsyncConnection[Any]) -> int:
    """Mark log rows left ``running`` by a process that died as failed.

    Call only while holding the sync lock: then no other process is syncing,
    so every ``running`` row belongs to a process that is gone.
    """
    cur = await conn.execute(
        "UPDATE st_sync_log SET status = 'failed', error = %s, finished_at = now() WHERE status = 'running'",
        (INTERRUPTED_ERROR,),
    )
    if cur.rowcount:
        logger.warning(
            "marked %d sync log rows of an interrupted run as failed",
            cur.rowcount,
            extra={"event": "sync_interrupted_runs_closed"},
        )
    return cur.rowcount
