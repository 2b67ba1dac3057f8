"""The instance store: every SQL statement that reads or writes enrollments, step runs and pauses.

Each function takes the connection (and so the transaction) of its
caller. Times come from the engine clock: ``now`` is ``Clock.sql_now()``,
None meaning the database's ``now()``. Writes made after a step ran are
fenced on ``lease_token``, which grows by one on every claim, so a daemon
whose lease expired cannot overwrite the outcome of the daemon that took
the enrollment over.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

logger = logging.getLogger(__name__)

NOW = "coalesce(%(now)s::timestamptz, now())"


@dataclass(frozen=True)
class Claim:
    """An enrollment this daemon holds the lease on, as it was when claimed."""

    instance_id: int
    rule_id: str
    rule_version: str
    entity: str
    entity_id: int
    current_step: str | None
    step_index: int
    attempt: int
    lease_token: int
    due_at: datetime | None
    customer_id: int | None
    location_id: int | None


# --- enrollment ---------------------------------------------------------------


@dataclass(frozen=True)
class NewEnrollment:
    """One enrollment the trigger engine wants to insert."""

    rule_id: str
    rule_version: str
    entity: str
    entity_id: int
    enrollment_key: str
    event_id: int | None
    first_step: str | None  # None: the rule has no steps, so the enrollment is complete at once
    due_at: datetime | None
    customer_id: int | None
    location_id: int | None


async def insert_enrollments(
    conn: psycopg.AsyncConnection[Any], enrollments: list[NewEnrollment], now: datetime | None
) -> dict[tuple[str, str], int]:
    """Insert enrollments in one statement and return the new ids by (rule id, key).

    The unique index ``workflow_instances_one_active`` skips a key that
    already has an active enrollment of the rule. It also skips the second
    of two equal keys in one call.
    """
    if not enrollments:
        return {}
    cursor = await conn.execute(
        f"""
        INSERT INTO workflow_instances
            (rule_id, rule_version, entity, entity_id, enrollment_key, event_id, status,
             current_step, next_run_at, customer_id, location_id, enrolled_at, updated_at, finished_at)
        SELECT rule_id, rule_version, entity, entity_id, enrollment_key, event_id,
               CASE WHEN first_step IS NULL THEN 'completed' ELSE 'active' END,
               first_step, due_at, customer_id, location_id, {NOW}, {NOW},
               CASE WHEN first_step IS NULL THEN {NOW} END
          FROM unnest(%(rule_ids)s::text[], %(versions)s::text[], %(entities)s::text[], %(entity_ids)s::bigint[],
                      %(keys)s::text[], %(event_ids)s::bigint[], %(steps)s::text[], %(due)s::timestamptz[],
                      %(customers)s::bigint[], %(locations)s::bigint[])
               AS new (rule_id, rule_version, entity, entity_id, enrollment_key, event_id, first_step, due_at,
                       customer_id, location_id)
        ON CONFLICT (rule_id, enrollment_key) WHERE status = 'active' DO NOTHING
        RETURNING id, rule_id, enrollment_key
        """,
        {
            "rule_ids": [e.rule_id for e in enrollments],
            "versions": [e.rule_version for e in enrollments],
            "entities": [e.entity for e in enrollments],
            "entity_ids": [e.entity_id for e in enrollments],
            "keys": [e.enrollment_key for e in enrollments],
            "event_ids": [e.event_id for e in enrollments],
            "steps": [e.first_step for e in enrollments],
            "due": [e.due_at for e in enrollments],
            "customers": [e.customer_id for e in enrollments],
            "locations": [e.location_id for e in enrollments],
            "now": now,
        },
    )
    return {(row[1], row[2]): int(row[0]) for row in await cursor.fetchall()}


async def enrolled_keys(conn: psycopg.AsyncConnection[Any], keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Return the (rule id, key) pairs among ``keys`` that have an enrollment in any status (``enroll.once``).

    The index ``workflow_instances_rule_key`` makes this one probe per key,
    however long the rule's history.
    """
    if not keys:
        return set()
    cursor = await conn.execute(
        """
        SELECT DISTINCT i.rule_id, i.enrollment_key
          FROM unnest(%(rule_ids)s::text[], %(keys)s::text[]) AS k (rule_id, enrollment_key)
          JOIN workflow_instances AS i ON i.rule_id = k.rule_id AND i.enrollment_key = k.enrollment_key
        """,
        {"rule_ids": [key[0] for key in keys], "keys": [key[1] for key in keys]},
    )
    return {(row[0], row[1]) for row in await cursor.fetchall()}


async def stop_active_by_keys(
    conn: psycopg.AsyncConnection[Any], stops: list[tuple[str, str, str]], now: datetime | None
) -> list[tuple[int, str]]:
    """Stop the active enrollments with these (rule id, key, reason) (``on_retrigger: restart``).

    Returns (instance id, rule id) of each enrollment stopped.
    """
    if not stops:
        return []
    cursor = await conn.execute(
        f"""
        UPDATE workflow_instances AS i
           SET status = 'stopped', stop_reason = s.reason, finished_at = {NOW}, updated_at = {NOW},
               next_run_at = NULL, lease_owner = NULL, lease_expires_at = NULL
          FROM unnest(%(rule_ids)s::text[], %(keys)s::text[], %(reasons)s::text[]) AS s (rule_id, enrollment_key, reason)
         WHERE i.rule_id = s.rule_id AND i.enrollment_key = s.enrollment_key AND i.status = 'active'
        RETURNING i.id, i.rule_id
        """,
        {
            "rule_ids": [stop[0] for stop in stops],
            "keys": [stop[1] for stop in stops],
            "reasons": [stop[2] for stop in stops],
            "now": now,
        },
    )
    return [(row[0], row[1]) for row in await cursor.fetchall()]


async def stop_instances(
    conn: psycopg.AsyncConnection[Any], instance_ids: list[int], reason: str, now: datetime | None
) -> list[int]:
    """Stop these enrollments if they are still active; return the ids that were stopped.

    A step that is running meanwhile keeps its lease but can no longer
    advance the enrollment, because its write-back requires ``status = 'active'``.
    """
    if not instance_ids:
        return []
    cursor = await conn.execute(
        f"""
        UPDATE workflow_instances
           SET status = 'stopped', stop_reason = %(reason)s, finished_at = {NOW}, updated_at = {NOW},
               next_run_at = NULL, lease_owner = NULL, lease_expires_at = NULL
         WHERE id = ANY(%(ids)s) AND status = 'active'
        RETURNING id
        """,
        {"ids": instance_ids, "reason": reason, "now": now},
    )
    return [row[0] for row in await cursor.fetchall()]


async def count_recent_enrollments(
    conn: psycopg.AsyncConnection[Any], rule_ids: list[str], now: datetime | None
) -> dict[str, int]:
    """Count each rule's enrollments of the last hour, or since its last resume when that is later."""
    if not rule_ids:
        return {}
    cursor = await conn.execute(
        f"""
        SELECT i.rule_id, count(*)
          FROM workflow_instances AS i
          LEFT JOIN workflow_rule_state AS s ON s.rule_id = i.rule_id
         WHERE i.rule_id = ANY(%(rule_ids)s)
           AND i.enrolled_at > greatest({NOW} - interval '1 hour', coalesce(s.resumed_at, '-infinity'))
         GROUP BY i.rule_id
        """,
        {"rule_ids": rule_ids, "now": now},
    )
    return {row[0]: int(row[1]) for row in await cursor.fetchall()}


# --- rule pauses --------------------------------------------------------------


async def rule_states(conn: psycopg.AsyncConnection[Any]) -> dict[str, dict[str, Any]]:
    """Return every row of ``workflow_rule_state`` by rule id."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute("SELECT * FROM workflow_rule_state")
        return {row["rule_id"]: row for row in await cursor.fetchall()}


async def pause_rule(conn: psycopg.AsyncConnection[Any], rule_id: str, reason: str, now: datetime | None) -> None:
    await conn.execute(
        f"""
        INSERT INTO workflow_rule_state (rule_id, paused_at, paused_reason, updated_at)
        VALUES (%(rule_id)s, {NOW}, %(reason)s, {NOW})
        ON CONFLICT (rule_id) DO UPDATE
           SET paused_at = EXCLUDED.paused_at, paused_reason = EXCLUDED.paused_reason, updated_at = EXCLUDED.updated_at
        """,
        {"rule_id": rule_id, "reason": reason, "now": now},
    )


async def resume_rule(conn: psycopg.AsyncConnection[Any], rule_id: str, now: datetime | None) -> bool:
    """Clear the pause of ``rule_id``; return False when it was not paused."""
    cursor = await conn.execute(
        f"""
        UPDATE workflow_rule_state
           SET paused_at = NULL, paused_reason = NULL, resumed_at = {NOW}, updated_at = {NOW}
         WHERE rule_id = %(rule_id)s AND paused_at IS NOT NULL
        """,
        {"rule_id": rule_id, "now": now},
    )
    return cursor.rowcount > 0


# --- claiming due steps ---------------------------------------------------------


async def next_due_at(conn: psycopg.AsyncConnection[Any], rule_ids: list[str]) -> datetime | None:
    """Return the earliest ``next_run_at`` of an active enrollment of these rules."""
    cursor = await conn.execute(
        """
        SELECT next_run_at FROM workflow_instances
         WHERE status = 'active' AND next_run_at IS NOT NULL AND rule_id = ANY(%s)
         ORDER BY next_run_at LIMIT 1
        """,
        (rule_ids,),
    )
    row = await cursor.fetchone()
    return row[0] if row else None


async def claim_due(
    conn: psycopg.AsyncConnection[Any],
    *,
    owner: uuid.UUID,
    limit: int,
    lease: timedelta,
    rule_ids: list[str],
    now: datetime | None,
) -> list[Claim]:
    """Claim up to ``limit`` due enrollments with a lease, in one statement.

    Claiming moves ``next_run_at`` one lease length ahead on the engine
    clock: if this daemon dies, the enrollment becomes due again. The lease
    itself expires on the database's real clock, so a test's fake clock or
    the demo's scaled clock jumping ahead while a step runs cannot hand the
    same step to a second worker.
    """
    if limit <= 0 or not rule_ids:
        return []
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            f"""
            UPDATE workflow_instances AS i
               SET lease_owner = %(owner)s,
                   lease_token = i.lease_token + 1,
                   lease_expires_at = now() + %(lease)s,
                   next_run_at = {NOW} + %(lease)s,
                   updated_at = {NOW}
              FROM (
                    SELECT id, next_run_at AS due_at FROM workflow_instances
                     WHERE status = 'active' AND next_run_at <= {NOW} AND rule_id = ANY(%(rule_ids)s)
                       AND (lease_expires_at IS NULL OR lease_expires_at <= now())
                     ORDER BY next_run_at
                     LIMIT %(limit)s
                       FOR UPDATE SKIP LOCKED
                   ) AS due
             WHERE i.id = due.id
            RETURNING i.id, i.rule_id, i.rule_version, i.entity, i.entity_id, i.current_step, i.step_index,
                      i.attempt, i.lease_token, due.due_at, i.customer_id, i.location_id
            """,
            {"owner": owner, "lease": lease, "limit": limit, "rule_ids": rule_ids, "now": now},
        )
        rows = await cursor.fetchall()
    return [
        Claim(
            instance_id=row["id"],
            rule_id=row["rule_id"],
            rule_version=row["rule_version"],
            entity=row["entity"],
            entity_id=row["entity_id"],
            current_step=row["current_step"],
            step_index=row["step_index"],
            attempt=row["attempt"],
            lease_token=row["lease_token"],
            due_at=row["due_at"],
            customer_id=row["customer_id"],
            location_id=row["location_id"],
        )
        for row in rows
    ]


async def renew_lease(
    conn: psycopg.AsyncConnection[Any], claim: Claim, owner: uuid.UUID, lease: timedelta, now: datetime | None
) -> bool:
    """Extend the lease of ``claim``; return False when it is no longer ours."""
    cursor = await conn.execute(
        f"""
        UPDATE workflow_instances
           SET lease_expires_at = now() + %(lease)s, next_run_at = {NOW} + %(lease)s
         WHERE id = %(id)s AND lease_token = %(token)s AND lease_owner = %(owner)s AND status = 'active'
        """,
        {"id": claim.instance_id, "token": claim.lease_token, "owner": owner, "lease": lease, "now": now},
    )
    return cursor.rowcount > 0


async def release_leases(conn: psycopg.AsyncConnection[Any], owner: uuid.UUID, now: datetime | None) -> int:
    """Give back every lease ``owner`` holds, making those enrollments due at once; return how many."""
    cursor = await conn.execute(
        f"""
        UPDATE workflow_instances
           SET lease_owner = NULL, lease_expires_at = NULL, next_run_at = {NOW}, updated_at = {NOW}
         WHERE lease_owner = %(owner)s AND status = 'active'
        """,
        {"owner": owner, "now": now},
    )
    await conn.execute(
        f"""
        UPDATE workflow_step_runs SET status = 'abandoned', finished_at = {NOW},
               detail = 'the daemon stopped before the step finished'
         WHERE lease_owner = %(owner)s AND status = 'running'
        """,
        {"owner": owner, "now": now},
    )
    return cursor.rowcount


# --- step runs and write-backs -------------------------------------------------------


async def abandon_earlier_runs(conn: psycopg.AsyncConnection[Any], claim: Claim, now: datetime | None) -> int:
    """Mark step runs left ``running`` by an earlier lease holder as abandoned; return how many."""
    cursor = await conn.execute(
        f"""
        UPDATE workflow_step_runs
           SET status = 'abandoned', finished_at = {NOW},
               detail = 'the lease expired before the step finished; the step runs again'
         WHERE instance_id = %(id)s AND status = 'running' AND lease_token < %(token)s
        """,
        {"id": claim.instance_id, "token": claim.lease_token, "now": now},
    )
    return cursor.rowcount


async def record_step_run(
    conn: psycopg.AsyncConnection[Any],
    claim: Claim,
    owner: uuid.UUID,
    *,
    step: str,
    attempt: int,
    status: str,
    now: datetime | None,
    action: str | None = None,
    detail: str = "",
    defer_until: datetime | None = None,
    dry_run: bool = False,
) -> int:
    """Insert a step run and return its id; ``running`` rows are finished by ``finish_step_run``."""
    cursor = await conn.execute(
        f"""
        INSERT INTO workflow_step_runs
            (instance_id, rule_id, rule_version, step, attempt, lease_token, lease_owner, status, action,
             detail, defer_until, dry_run, due_at, started_at, finished_at)
        VALUES (%(id)s, %(rule_id)s, %(version)s, %(step)s, %(attempt)s, %(token)s, %(owner)s, %(status)s,
                %(action)s, %(detail)s, %(defer_until)s, %(dry_run)s, %(due_at)s, {NOW},
                CASE WHEN %(status)s <> 'running' THEN {NOW} END)
        RETURNING id
        """,
        {
            "id": claim.instance_id,
            "rule_id": claim.rule_id,
            "version": claim.rule_version,
            "step": step,
            "attempt": attempt,
            "token": claim.lease_token,
            "owner": owner,
            "status": status,
            "action": action,
            "detail": detail,
            "defer_until": defer_until,
            "dry_run": dry_run,
            "due_at": claim.due_at,
            "now": now,
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def start_attempt(
    conn: psycopg.AsyncConnection[Any], claim: Claim, owner: uuid.UUID, attempt: int, now: datetime | None
) -> bool:
    """Count an attempt on the enrollment before the executor runs; False when the lease is gone."""
    cursor = await conn.execute(
        f"""
        UPDATE workflow_instances SET attempt = %(attempt)s, updated_at = {NOW}
         WHERE id = %(id)s AND lease_token = %(token)s AND lease_owner = %(owner)s AND status = 'active'
        """,
        {"id": claim.instance_id, "token": claim.lease_token, "owner": owner, "attempt": attempt, "now": now},
    )
    return cursor.rowcount > 0


async def finish_step_run(
    conn: psycopg.AsyncConnection[Any],
    step_run_id: int,
    *,
    status: str,
    detail: str,
    defer_until: datetime | None,
    transcript: list[dict[str, Any]],
    usage: dict[str, int],
    lease_lost: bool,
    now: datetime | None,
) -> None:
    """Store the executor's outcome, transcript and usage on its step run.

    The outcome is stored even when the lease was lost, because it is a
    record of what the executor did. ``lease_lost`` marks that it did not count.
    """
    await conn.execute(
        f"""
        UPDATE workflow_step_runs
           SET status = %(status)s, detail = %(detail)s, defer_until = %(defer_until)s,
               transcript = %(transcript)s, usage = %(usage)s, lease_lost = %(lease_lost)s,
               finished_at = {NOW}
         WHERE id = %(id)s
        """,
        {
            "id": step_run_id,
            "status": status,
            "detail": detail,
            "defer_until": defer_until,
            "transcript": Jsonb(transcript),
            "usage": Jsonb(usage),
            "lease_lost": lease_lost,
            "now": now,
        },
    )


async def write_back(
    conn: psycopg.AsyncConnection[Any],
    claim: Claim,
    owner: uuid.UUID,
    *,
    now: datetime | None,
    status: str = "active",
    current_step: str | None = None,
    step_index: int | None = None,
    attempt: int | None = None,
    next_run_at: datetime | None = None,
    run_after: timedelta | None = None,
    stop_reason: str | None = None,
    error: str | None = None,
) -> bool:
    """Move the enrollment on and release its lease, fenced on the lease; False when the lease is gone.

    ``next_run_at`` sets an absolute due time; ``run_after`` one relative
    to the clock's now (computed in SQL, like every due time).
    """
    finished = status != "active"
    cursor = await conn.execute(
        f"""
        UPDATE workflow_instances
           SET status = %(status)s,
               current_step = CASE WHEN %(finished)s THEN current_step ELSE %(step)s END,
               step_index = coalesce(%(step_index)s, step_index),
               attempt = coalesce(%(attempt)s, attempt),
               next_run_at = CASE WHEN %(finished)s THEN NULL
                                  ELSE coalesce(%(next_run_at)s::timestamptz, {NOW} + %(run_after)s::interval) END,
               stop_reason = coalesce(%(stop_reason)s, stop_reason),
               error = coalesce(%(error)s, error),
               lease_owner = NULL, lease_expires_at = NULL,
               updated_at = {NOW},
               finished_at = CASE WHEN %(finished)s THEN {NOW} END
         WHERE id = %(id)s AND lease_token = %(token)s AND lease_owner = %(owner)s AND status = 'active'
        """,
        {
            "id": claim.instance_id,
            "token": claim.lease_token,
            "owner": owner,
            "status": status,
            "finished": finished,
            "step": current_step,
            "step_index": step_index,
            "attempt": attempt,
            "next_run_at": next_run_at,
            "run_after": run_after if run_after is not None else timedelta(0),
            "stop_reason": stop_reason,
            "error": error,
            "now": now,
        },
    )
    return cursor.rowcount > 0
