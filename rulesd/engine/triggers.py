"""The trigger engine: turn change events into enrollments and stop enrollments whose stop condition holds.

One pass claims a batch of unprocessed ``workflow_events`` rows with
``FOR UPDATE SKIP LOCKED``, matches them to rules, loads the current rows
in bulk, enrolls, stops, and marks the events processed, all in one
transaction: a crash repeats the batch but never doubles its work.
Several daemons may run passes at once; each takes different events.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from rulesd.config import EngineSettings
from rulesd.engine import metrics, store
from rulesd.engine.clock import Clock
from rulesd.engine.rows import RowCache, Rows, load_rows
from rulesd.engine.ruleset import RuleSet
from rulesd.logs import log_context
from rulesd.rules.model import EvalContext, Rule
from rulesd.servicetitan.catalog import get_entity, related_entities

logger = logging.getLogger(__name__)

FLOOD_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Event:
    """One row of ``workflow_events``."""

    id: int
    entity: str
    entity_id: int
    kind: str
    changes: dict[str, Any]
    status_from: str | None
    status_to: str | None
    occurred_at: datetime

    def as_context(self) -> dict[str, Any]:
        return {"kind": self.kind, "from": self.status_from, "to": self.status_to, "changes": self.changes}


@dataclass
class PassResult:
    """What one trigger pass did, for logs, metrics and tests."""

    events: int = 0
    enrolled: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)


@dataclass
class _FloodGuard:
    """Counts each rule's enrollments of the last hour within one pass."""

    limit: int
    counts: dict[str, int] = field(default_factory=dict)


class TriggerEngine:
    """Processes change events in batches; ``run_pass`` is one batch, ``drain`` runs passes until none are left."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        rules: Callable[[], RuleSet],
        clock: Clock,
        settings: EngineSettings,
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock
        self._settings = settings

    async def drain(self) -> PassResult:
        """Run passes until no unprocessed event is left; return the totals."""
        total = PassResult()
        while True:
            result = await self.run_pass()
            total.events += result.events
            total.enrolled += result.enrolled
            total.stopped += result.stopped
            total.paused += result.paused
            if result.events < self._settings.event_batch_size:
                return total

    async def run_pass(self) -> PassResult:
        """Claim one batch of unprocessed events and process it in one transaction."""
        result = PassResult()
        async with self._pool.connection() as conn:
            async with conn.transaction():
                events = await self._claim_events(conn)
                if not events:
                    return result
                await self._process(conn, events, result)
                await conn.execute(
                    "UPDATE workflow_events SET processed_at = coalesce(%s::timestamptz, now()) WHERE id = ANY(%s)",
                    (self._clock.sql_now(), [event.id for event in events]),
                )
        result.events = len(events)
        self._observe(events, result)
        return result

    async def _claim_events(self, conn: psycopg.AsyncConnection[Any]) -> list[Event]:
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(
                """
                SELECT id, entity, entity_id, kind, changes, status_from, status_to, occurred_at
                  FROM workflow_events
                 WHERE processed_at IS NULL
                 ORDER BY id
                 LIMIT %s
                   FOR UPDATE SKIP LOCKED
                """,
                (self._settings.event_batch_size,),
            )
            rows = await cursor.fetchall()
        return [
            Event(
                id=row["id"],
                entity=row["entity"],
                entity_id=row["entity_id"],
                kind=row["kind"],
                changes=row["changes"] or {},
                status_from=row["status_from"],
                status_to=row["status_to"],
                occurred_at=row["occurred_at"],
            )
            for row in rows
        ]

    async def _process(self, conn: psycopg.AsyncConnection[Any], events: list[Event], result: PassResult) -> None:
        rule_set = self._rules()
        now = self._clock.now()
        states = await store.rule_states(conn)
        paused = {rule_id for rule_id, state in states.items() if state["paused_at"] is not None}
        flood = _FloodGuard(limit=self._settings.flood_limit)
        cache = RowCache()

        by_entity: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_entity[event.entity].append(event)

        for entity, entity_events in by_entity.items():
            candidates = {rule.id: rule for rule in rule_set.by_entity.get(entity, ())}
            if candidates:
                aliases = set().union(*(rule.aliases for rule in candidates.values()))
                ids = {event.entity_id for event in entity_events}
                rows = await load_rows(conn, entity, ids, aliases, cache)
                for event in entity_events:
                    for rule in rule_set.matching(entity, event.kind, event.status_from, event.status_to):
                        await self._consider(conn, rule, event, rows[event.entity_id], now, paused, states, flood, result)
            await self._stop_concerned(conn, rule_set, entity, entity_events, now, cache, result)

    async def _consider(
        self,
        conn: psycopg.AsyncConnection[Any],
        rule: Rule,
        event: Event,
        rows: Rows,
        now: datetime,
        paused: set[str],
        states: dict[str, dict[str, Any]],
        flood: _FloodGuard,
        result: PassResult,
    ) -> None:
        with log_context(event_id=event.id, rule_id=rule.id):
            if rule.id in paused:
                logger.debug("rule %s is paused; event %s not considered", rule.id, event.id, extra={"event": "rule_paused_skip"})
                return
            if now - event.occurred_at > rule.trigger.max_age:
                logger.info(
                    "ignored event %s for rule %s: the change is older than the rule's max_age",
                    event.id,
                    rule.id,
                    extra={"event": "event_too_old", "entity": event.entity, "entity_id": event.entity_id},
                )
                return
            context = EvalContext(rows=rows, now=now, event=event.as_context())
            if rule.trigger.condition is not None and not _evaluate(rule.trigger.condition, context, rule, "if"):
                return
            key = _enrollment_key(rule, rows, event)
            if key is None:
                logger.warning(
                    "cannot enroll %s %s in rule %s: enrollment key %s.%s is empty",
                    event.entity,
                    event.entity_id,
                    rule.id,
                    rule.enroll.key_alias,
                    rule.enroll.key_column,
                    extra={"event": "enrollment_key_missing", "entity_id": event.entity_id},
                )
                return
            if await self._flooded(conn, rule, states, flood, result, paused):
                return
            instance_id = await self._enroll(conn, rule, event, rows, key)
            if instance_id is not None:
                flood.counts[rule.id] += 1
                result.enrolled.append(instance_id)

    async def _enroll(
        self, conn: psycopg.AsyncConnection[Any], rule: Rule, event: Event, rows: Rows, key: str
    ) -> int | None:
        sql_now = self._clock.sql_now()
        if rule.enroll.on_retrigger == "parallel":
            key = f"{key}#event:{event.id}"
        elif rule.enroll.on_retrigger == "restart":
            restarted = await store.stop_active_by_key(
                conn, rule.id, key, f"restarted by event {event.id} ({event.entity} {event.kind})", sql_now
            )
            for old_id in restarted:
                logger.info(
                    "restarted enrollment %s of rule %s", old_id, rule.id,
                    extra={"event": "enrollment_restarted", "instance_id": old_id},
                )
        first = rule.steps[0] if rule.steps else None
        # ``after`` of the first step counts from the change itself, so a
        # daemon that was down still runs the step when the rule says.
        due_at = event.occurred_at + first.after if first is not None else None
        trigger_row = rows.get(rule.trigger.entity) or {}
        instance_id = await store.insert_enrollment(
            conn,
            rule_id=rule.id,
            rule_version=rule.version,
            entity=event.entity,
            entity_id=event.entity_id,
            enrollment_key=key,
            event_id=event.id,
            first_step=first.name if first else None,
            due_at=due_at,
            customer_id=_party_id(event.entity, trigger_row, "customer"),
            location_id=_party_id(event.entity, trigger_row, "location"),
            now=sql_now,
        )
        if instance_id is None:
            logger.debug(
                "%s %s already has an active enrollment in rule %s (key %s)",
                event.entity, event.entity_id, rule.id, key,
                extra={"event": "enrollment_exists", "entity_id": event.entity_id},
            )
            return None
        metrics.ENROLLMENTS.labels(rule.id).inc()
        logger.info(
            "enrolled %s %s in rule %s as enrollment %s; first step %s due %s",
            event.entity, event.entity_id, rule.id, instance_id,
            first.name if first else "(none)", due_at.isoformat() if due_at else "never",
            extra={"event": "rule_fired", "instance_id": instance_id, "entity_id": event.entity_id},
        )
        return instance_id

    async def _flooded(
        self,
        conn: psycopg.AsyncConnection[Any],
        rule: Rule,
        states: dict[str, dict[str, Any]],
        flood: _FloodGuard,
        result: PassResult,
        paused: set[str],
    ) -> bool:
        if rule.id not in flood.counts:
            resumed_at = states.get(rule.id, {}).get("resumed_at")
            flood.counts[rule.id] = await store.count_recent_enrollments(
                conn, rule.id, resumed_at, self._clock.sql_now()
            )
        if flood.counts[rule.id] < flood.limit:
            return False
        reason = (
            f"flood guard: rule {rule.id} would enroll more than {flood.limit} records within an hour"
        )
        await store.pause_rule(conn, rule.id, reason, self._clock.sql_now())
        paused.add(rule.id)
        result.paused.append(rule.id)
        metrics.RULES_PAUSED.inc()
        logger.error(
            "paused rule %s: it would enroll more than %s records within an hour (engine.flood_limit); "
            "check the last sync and the rule's trigger, then run `rulesd rules resume %s`",
            rule.id, flood.limit, rule.id,
            extra={"event": "rule_paused", "rule_id": rule.id, "limit": flood.limit},
        )
        return True

    async def _stop_concerned(
        self,
        conn: psycopg.AsyncConnection[Any],
        rule_set: RuleSet,
        entity: str,
        events: list[Event],
        now: datetime,
        cache: RowCache,
        result: PassResult,
    ) -> None:
        changed_ids = sorted({event.entity_id for event in events})
        last_event = {event.entity_id: event for event in events}
        for event in events:
            # The stop check reads rows fresh from this transaction.
            cache.forget(event.entity, event.entity_id)
        for rule in rule_set.rules:
            if not rule.enabled or rule.stop_if is None:
                continue
            concerned = await _concerned_instances(conn, rule, entity, changed_ids)
            if not concerned:
                continue
            rows = await load_rows(conn, rule.trigger.entity, {entity_id for _, entity_id in concerned}, rule.aliases, cache)
            for instance_id, entity_id in concerned:
                own_event = last_event.get(entity_id) if entity == rule.trigger.entity else None
                context = EvalContext(rows=rows[entity_id], now=now, event=own_event.as_context() if own_event else {})
                if not _evaluate(rule.stop_if, context, rule, "stop_if"):
                    continue
                cause = own_event or events[-1]
                reason = (
                    f"stop_if held after {cause.entity} {cause.entity_id} {_describe(cause)}: {rule.stop_if.source}"
                )
                stopped = await store.stop_instances(conn, [instance_id], reason, self._clock.sql_now())
                for stopped_id in stopped:
                    metrics.STOPS.labels(rule.id).inc()
                    result.stopped.append(stopped_id)
                    logger.info(
                        "stopped enrollment %s of rule %s: %s", stopped_id, rule.id, reason,
                        extra={"event": "enrollment_stopped", "instance_id": stopped_id, "rule_id": rule.id},
                    )

    def _observe(self, events: list[Event], result: PassResult) -> None:
        metrics.EVENTS_PROCESSED.inc(len(events))
        now = self._clock.now()
        for event in events:
            metrics.EVENT_LAG.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        logger.debug(
            "processed %s events: %s enrolled, %s stopped",
            len(events), len(result.enrolled), len(result.stopped),
            extra={"event": "events_processed", "count": len(events)},
        )


async def _concerned_instances(
    conn: psycopg.AsyncConnection[Any], rule: Rule, entity: str, changed_ids: list[int]
) -> list[tuple[int, int]]:
    """Return (instance id, entity id) of ``rule``'s active enrollments whose stop condition reads a changed row.

    An enrollment is concerned when the changed row is its own record, or
    the row one of ``stop_if``'s aliases reaches through the catalog's
    relations (the estimate's customer, the job's location, …).
    """
    assert rule.stop_if is not None
    paths = related_entities(rule.trigger.entity)
    subqueries: list[sql.Composable] = []
    for alias in sorted(rule.stop_if.aliases | {rule.trigger.entity}):
        path = paths.get(alias)
        if path is None:
            continue
        alias_entity = path[-1].entity if path else rule.trigger.entity
        if alias_entity != entity:
            continue
        subqueries.append(_reverse_path_query(rule.trigger.entity, path))
    if not subqueries:
        return []
    query = sql.SQL(
        "SELECT id, entity_id FROM workflow_instances "
        "WHERE status = 'active' AND rule_id = %(rule_id)s AND entity = %(entity)s AND entity_id IN ({}) ORDER BY id"
    ).format(sql.SQL(" UNION ").join(subqueries))
    cursor = await conn.execute(query, {"rule_id": rule.id, "entity": rule.trigger.entity, "changed": changed_ids})
    return [(row[0], row[1]) for row in await cursor.fetchall()]


def _reverse_path_query(trigger_entity: str, path: tuple[Any, ...]) -> sql.Composable:
    # Walk the relation path backwards: the ids of the trigger entity
    # whose path ends at one of the changed rows.
    query: sql.Composable = sql.SQL("SELECT unnest(%(changed)s::bigint[])")
    for index in range(len(path) - 1, -1, -1):
        relation = path[index]
        source = get_entity(path[index - 1].entity if index > 0 else trigger_entity)
        query = sql.SQL("SELECT id FROM {table} WHERE {column} IN ({inner})").format(
            table=sql.Identifier(source.table), column=sql.Identifier(relation.column), inner=query
        )
    return query


def _evaluate(condition: Any, context: EvalContext, rule: Rule, where: str) -> bool:
    try:
        return bool(condition.evaluate(context))
    except Exception:  # noqa: BLE001 - a broken condition must not stop the daemon
        logger.exception(
            "evaluating %s of rule %s failed; treating it as false", where, rule.id,
            extra={"event": "condition_failed", "rule_id": rule.id},
        )
        return False


def _enrollment_key(rule: Rule, rows: Rows, event: Event) -> str | None:
    row = rows.get(rule.enroll.key_alias)
    if row is None and rule.enroll.key_alias == event.entity and rule.enroll.key_column == "id":
        # A deleted row is gone from the mirror; its id is still the key.
        return f"{rule.enroll.key_alias}:{event.entity_id}"
    value = row.get(rule.enroll.key_column) if row else None
    if value is None:
        return None
    return f"{rule.enroll.key_alias}.{rule.enroll.key_column}:{value}" if rule.enroll.key_column != "id" else f"{rule.enroll.key_alias}:{value}"


def _party_id(entity: str, row: dict[str, Any], party: str) -> int | None:
    if entity == party:
        return row.get("id")
    value = row.get(f"{party}_id")
    return int(value) if value is not None else None


def _describe(event: Event) -> str:
    if event.kind == "status_changed":
        return f"status_changed ({event.status_from} -> {event.status_to})"
    return event.kind
