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
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from rulesd.config import EngineSettings
from rulesd.engine import metrics, store
from rulesd.engine.clock import Clock
from rulesd.engine.evaluate import evaluate_condition
from rulesd.engine.rows import RowCache, Rows, load_rows
from rulesd.engine.ruleset import RuleSet
from rulesd.rules.model import EvalContext, Rule
from rulesd.servicetitan.catalog import get_entity, related_entities

logger = logging.getLogger(__name__)



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
    """Counts and ids from one trigger pass, for logs, metrics and tests."""

    events: int = 0
    enrolled: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    """An event that fired a rule and passed its ``if``: an enrollment to insert."""

    rule: Rule
    event: Event
    rows: Rows
    key: str


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
                # The claim marks the events processed; the mark commits
                # with the enrollments and stops below, or not at all.
                events = await self._claim_events(conn)
                if not events:
                    return result
                await self._process(conn, events, result)
        result.events = len(events)
        self._observe(events, result)
        return result

    async def _claim_events(self, conn: psycopg.AsyncConnection[Any]) -> list[Event]:
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(
                """
                UPDATE workflow_events
                   SET processed_at = coalesce(%s::timestamptz, now())
                 WHERE id IN (SELECT id
                                FROM workflow_events
                               WHERE processed_at IS NULL
                               ORDER BY id
                               LIMIT %s
                                 FOR UPDATE SKIP LOCKED)
                RETURNING id, entity, entity_id, kind, changes, status_from, status_to, occurred_at
                """,
                (self._clock.sql_now(), self._settings.event_batch_size),
            )
            rows = sorted(await cursor.fetchall(), key=lambda row: row["id"])
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
        cache = RowCache()

        by_entity: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_entity[event.entity].append(event)

        for entity, entity_events in by_entity.items():
            candidates = await self._candidates(conn, rule_set, entity, entity_events, now, paused, cache)
            await self._enroll(conn, candidates, paused, result)
            await self._stop_concerned(conn, rule_set, entity, entity_events, now, cache, result)

    async def _candidates(
        self,
        conn: psycopg.AsyncConnection[Any],
        rule_set: RuleSet,
        entity: str,
        events: list[Event],
        now: datetime,
        paused: set[str],
        cache: RowCache,
    ) -> list[_Candidate]:
        rules = [rule for rule in rule_set.by_entity.get(entity, ()) if rule.id not in paused]
        if not rules:
            return []
        aliases = set().union(*(rule.aliases for rule in rules))
        rows = await load_rows(conn, entity, {event.entity_id for event in events}, aliases, cache)
        candidates: list[_Candidate] = []
        for event in events:
            dispatch = rule_set.dispatch(entity, event.kind, event.status_from, event.status_to)
            if not dispatch.rules:
                continue
            # The equality index leaves out the rules whose ``if`` cannot
            # hold on these rows. The rest share one context per event,
            # because this loop runs once per event and rule.
            event_rows = rows[event.entity_id]
            matching = dispatch.rules_for(event_rows)
            if not matching:
                continue
            context = EvalContext(rows=event_rows, now=now, event=event.as_context())
            age = now - event.occurred_at
            for rule in matching:
                if paused and rule.id in paused:
                    continue
                if age > rule.trigger.max_age:
                    logger.info(
                        "ignored event %s for rule %s: the change is older than the rule's max_age",
                        event.id, rule.id,
                        extra={"event": "event_too_old", "event_id": event.id, "rule_id": rule.id,
                               "entity": event.entity, "entity_id": event.entity_id},
                    )
                    continue
                if rule.trigger.condition is not None and not evaluate_condition(rule.trigger.condition, context, rule, "if"):
                    continue
                candidate = self._candidate(rule, event, event_rows)
                if candidate is not None:
                    candidates.append(candidate)
        return candidates

    def _candidate(self, rule: Rule, event: Event, rows: Rows) -> _Candidate | None:
        key = _enrollment_key(rule, rows, event)
        if key is None:
            logger.warning(
                "cannot enroll %s %s in rule %s: enrollment key %s.%s is empty",
                event.entity, event.entity_id, rule.id, rule.enroll.key_alias, rule.enroll.key_column,
                extra={"event": "enrollment_key_missing", "event_id": event.id, "rule_id": rule.id,
                       "entity_id": event.entity_id},
            )
            return None
        if rule.enroll.on_retrigger == "parallel":
            key = f"{key}#event:{event.id}"
        return _Candidate(rule, event, rows, key)

    async def _enroll(
        self,
        conn: psycopg.AsyncConnection[Any],
        candidates: list[_Candidate],
        paused: set[str],
        result: PassResult,
    ) -> None:
        """Insert the enrollments of one pass in bulk, after the flood guard and ``on_retrigger: restart``."""
        # Keys a once-only rule already enrolled go before the flood
        # guard counts, so they cannot pause the rule.
        candidates = await self._drop_enrolled_once(conn, _deduplicate(candidates))
        chosen = await self._flood_guard(conn, candidates, paused, result)
        sql_now = self._clock.sql_now()
        restarts = [
            (c.rule.id, c.key, f"restarted by event {c.event.id} ({c.event.entity} {c.event.kind})")
            for c in chosen
            if c.rule.enroll.on_retrigger == "restart"
        ]
        for old_id, rule_id in await store.stop_active_by_keys(conn, restarts, sql_now):
            logger.info(
                "restarted enrollment %s of rule %s", old_id, rule_id,
                extra={"event": "enrollment_restarted", "instance_id": old_id, "rule_id": rule_id},
            )
        inserted = await store.insert_enrollments(conn, [_new_enrollment(c) for c in chosen], sql_now)
        for candidate in chosen:
            instance_id = inserted.get((candidate.rule.id, candidate.key))
            self._log_enrollment(candidate, instance_id)
            if instance_id is not None:
                metrics.ENROLLMENTS.labels(candidate.rule.id).inc()
                result.enrolled.append(instance_id)

    async def _drop_enrolled_once(
        self, conn: psycopg.AsyncConnection[Any], candidates: list[_Candidate]
    ) -> list[_Candidate]:
        """Drop the candidates of ``enroll.once`` rules whose key was ever enrolled, whatever that enrollment's status."""
        once = [(c.rule.id, c.key) for c in candidates if c.rule.enroll.once]
        if not once:
            return candidates
        enrolled = await store.enrolled_keys(conn, once)
        kept: list[_Candidate] = []
        for candidate in candidates:
            if candidate.rule.enroll.once and (candidate.rule.id, candidate.key) in enrolled:
                logger.debug(
                    "%s %s was already enrolled in rule %s (key %s) and the rule enrolls a key once",
                    candidate.event.entity, candidate.event.entity_id, candidate.rule.id, candidate.key,
                    extra={"event": "enrollment_once", "entity_id": candidate.event.entity_id,
                           "rule_id": candidate.rule.id, "event_id": candidate.event.id},
                )
                continue
            kept.append(candidate)
        return kept

    def _log_enrollment(self, candidate: _Candidate, instance_id: int | None) -> None:
        event, rule = candidate.event, candidate.rule
        if instance_id is None:
            logger.debug(
                "%s %s already has an active enrollment in rule %s (key %s)",
                event.entity, event.entity_id, rule.id, candidate.key,
                extra={"event": "enrollment_exists", "entity_id": event.entity_id, "rule_id": rule.id},
            )
            return
        first = rule.steps[0] if rule.steps else None
        due = (event.occurred_at + first.after).isoformat() if first else "never"
        logger.info(
            "enrolled %s %s in rule %s as enrollment %s; first step %s due %s",
            event.entity, event.entity_id, rule.id, instance_id, first.name if first else "(none)", due,
            extra={"event": "rule_fired", "instance_id": instance_id, "entity_id": event.entity_id,
                   "rule_id": rule.id, "event_id": event.id},
        )

    async def _flood_guard(
        self,
        conn: psycopg.AsyncConnection[Any],
        candidates: list[_Candidate],
        paused: set[str],
        result: PassResult,
    ) -> list[_Candidate]:
        """Drop the candidates that would take a rule past ``engine.flood_limit`` in an hour, and pause that rule."""
        limit = self._settings.flood_limit
        by_rule: dict[str, list[_Candidate]] = defaultdict(list)
        for candidate in candidates:
            by_rule[candidate.rule.id].append(candidate)
        recent = await store.count_recent_enrollments(conn, list(by_rule), self._clock.sql_now())
        chosen: list[_Candidate] = []
        for rule_id, rule_candidates in by_rule.items():
            allowed = max(0, limit - recent.get(rule_id, 0))
            chosen.extend(rule_candidates[:allowed])
            if len(rule_candidates) > allowed:
                await self._pause(conn, rule_id, limit, paused, result)
        return chosen

    async def _pause(
        self, conn: psycopg.AsyncConnection[Any], rule_id: str, limit: int, paused: set[str], result: PassResult
    ) -> None:
        reason = f"flood guard: rule {rule_id} would enroll more than {limit} records within an hour"
        await store.pause_rule(conn, rule_id, reason, self._clock.sql_now())
        paused.add(rule_id)
        result.paused.append(rule_id)
        metrics.RULES_PAUSED.inc()
        logger.error(
            "paused rule %s: it would enroll more than %s records within an hour (engine.flood_limit); "
            "check the last sync and the rule's trigger, then run `rulesd rules resume %s`",
            rule_id, limit, rule_id,
            extra={"event": "rule_paused", "rule_id": rule_id, "limit": limit},
        )

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
        stoppable = [rule for rule in rule_set.rules if rule.enabled and rule.stop_if is not None]
        concerned = await _concerned_instances(conn, stoppable, entity, changed_ids)
        by_rule: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for instance_id, rule_id, entity_id in concerned:
            by_rule[rule_id].append((instance_id, entity_id))
        for rule_id, instances in by_rule.items():
            rule = rule_set.by_id[rule_id]
            assert rule.stop_if is not None
            rows = await load_rows(conn, rule.trigger.entity, {entity_id for _, entity_id in instances}, rule.aliases, cache)
            to_stop: dict[str, list[int]] = defaultdict(list)
            for instance_id, entity_id in instances:
                own_event = last_event.get(entity_id) if entity == rule.trigger.entity else None
                context = EvalContext(rows=rows[entity_id], now=now, event=own_event.as_context() if own_event else {})
                if not evaluate_condition(rule.stop_if, context, rule, "stop_if"):
                    continue
                cause = own_event or events[-1]
                reason = f"stop_if held after {cause.entity} {cause.entity_id} {_describe(cause)}: {rule.stop_if.source}"
                to_stop[reason].append(instance_id)
            for reason, instance_ids in to_stop.items():
                for stopped_id in await store.stop_instances(conn, instance_ids, reason, self._clock.sql_now()):
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
    conn: psycopg.AsyncConnection[Any], rules: list[Rule], entity: str, changed_ids: list[int]
) -> list[tuple[int, str, int]]:
    """Return (instance id, rule id, entity id) of active enrollments whose stop condition reads a changed row.

    An enrollment is concerned when the changed row is its own record, or
    the row one of ``stop_if``'s aliases reaches through the catalog's
    relations (the estimate's customer, the job's location, …). Enrollments
    of every rule on their own records are found with one query.
    """
    own_rules = [rule.id for rule in rules if rule.trigger.entity == entity]
    parts: list[sql.Composable] = []
    if own_rules:
        parts.append(
            sql.SQL(
                # Neither ``status`` nor ``rule_id`` is filtered in SQL: while
                # a fast-growing table has no statistics, the planner reads
                # every active enrollment of the entity through the partial
                # index on status and compares each with the whole id
                # array. Without them, joined to the ids, the only index is
                # (entity, entity_id): one probe per changed id, or one hash
                # join. Python drops the enrollments that
                # are not active and the rules without stop_if.
                "SELECT i.id, i.rule_id, i.entity_id, i.entity, i.status "
                "FROM unnest(%(changed)s::bigint[]) AS changed (id) CROSS JOIN LATERAL "
                "(SELECT id, rule_id, entity_id, entity, status FROM workflow_instances "
                "WHERE entity = %(entity)s AND entity_id = changed.id) AS i"
            )
        )
    for index, rule in enumerate(rules):
        assert rule.stop_if is not None
        paths = related_entities(rule.trigger.entity)
        for alias in sorted(rule.stop_if.aliases):
            path = paths.get(alias)
            if not path or path[-1].entity != entity:
                continue
            parts.append(
                sql.SQL(
                    "SELECT id, rule_id, entity_id, entity, status FROM workflow_instances WHERE status = 'active' "
                    "AND rule_id = {rule_id} AND entity = {trigger_entity} AND entity_id IN ({ids})"
                ).format(
                    rule_id=sql.Literal(rule.id),
                    trigger_entity=sql.Literal(rule.trigger.entity),
                    ids=_reverse_path_query(rule.trigger.entity, path),
                )
            )
    if not parts:
        return []
    query = sql.SQL(" UNION ").join(parts) + sql.SQL(" ORDER BY 1")
    cursor = await conn.execute(query, {"entity": entity, "changed": changed_ids})
    triggers = {rule.id: rule.trigger.entity for rule in rules}
    return [
        (row[0], row[1], row[2])
        for row in await cursor.fetchall()
        if row[4] == "active" and triggers.get(row[1]) == row[3]
    ]


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


def _deduplicate(candidates: list[_Candidate]) -> list[_Candidate]:
    # Two events for one key in a pass: ``ignore`` keeps the first,
    # ``restart`` the last; ``parallel`` keys already differ per event.
    chosen: dict[tuple[str, str], _Candidate] = {}
    for candidate in candidates:
        slot = (candidate.rule.id, candidate.key)
        if slot not in chosen or candidate.rule.enroll.on_retrigger == "restart":
            chosen[slot] = candidate
    return list(chosen.values())


def _new_enrollment(candidate: _Candidate) -> store.NewEnrollment:
    rule, event = candidate.rule, candidate.event
    first = rule.steps[0] if rule.steps else None
    trigger_row = candidate.rows.get(rule.trigger.entity) or {}
    return store.NewEnrollment(
        rule_id=rule.id,
        rule_version=rule.version,
        entity=event.entity,
        entity_id=event.entity_id,
        enrollment_key=candidate.key,
        event_id=event.id,
        first_step=first.name if first else None,
        # ``after`` of the first step counts from the change itself, so a
        # daemon that was down still runs the step at the time the rule sets.
        due_at=event.occurred_at + first.after if first else None,
        customer_id=_party_id(event.entity, trigger_row, "customer"),
        location_id=_party_id(event.entity, trigger_row, "location"),
    )



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
