"""The rule set the daemon runs: loading, indexing by trigger, and swapping in a new version.

A reload that has any error keeps the previous rule set and logs every
error. Each loaded version is stored in ``workflow_definitions``;
enrollments of a rule that was removed or disabled are cancelled, and the
rest continue on the new version by step name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import psycopg
from lark import Token, Tree

from rulesd.engine.clock import Clock
from rulesd.errors import RuleError
from rulesd.rules.model import Rule
from rulesd.servicetitan.catalog import get_entity, related_entities

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Equality:
    """A conjunct ``alias.column == constant`` (or ``in [constants]``) at the top of a rule's ``if``.

    When the row's value is not one of ``values``, the whole ``if`` is
    false, so the rule need not be evaluated for that event.
    """

    alias: str
    column: str
    values: frozenset[Any]


@dataclass(frozen=True)
class Dispatch:
    """The enabled rules one event shape (entity, kind, from, to) fires, indexed by their ``if`` equalities.

    Rules whose ``if`` has no equality conjunct are listed in ``always``.
    The others are grouped by (alias, column) and found by the row's
    value with one dictionary look-up per group, so 40 rules that each
    match one business unit cost one look-up per event, not 40
    evaluations. ``rules_for`` returns rules in rule-set order.
    """

    rules: tuple[Rule, ...]
    always: tuple[tuple[int, Rule], ...]
    indexed: tuple[tuple[str, str, Mapping[Any, tuple[tuple[int, Rule], ...]], tuple[tuple[int, Rule], ...]], ...]

    @classmethod
    def of(cls, rules: Sequence[Rule], equalities: Mapping[str, Equality]) -> Dispatch:
        always: list[tuple[int, Rule]] = []
        groups: dict[tuple[str, str], dict[Any, list[tuple[int, Rule]]]] = {}
        members: dict[tuple[str, str], list[tuple[int, Rule]]] = {}
        for position, rule in enumerate(rules):
            equality = equalities.get(rule.id)
            if equality is None:
                always.append((position, rule))
                continue
            slot = (equality.alias, equality.column)
            buckets = groups.setdefault(slot, {})
            members.setdefault(slot, []).append((position, rule))
            for value in equality.values:
                buckets.setdefault(value, []).append((position, rule))
        indexed = tuple(
            (alias, column, {value: tuple(found) for value, found in buckets.items()}, tuple(members[(alias, column)]))
            for (alias, column), buckets in groups.items()
        )
        return cls(tuple(rules), tuple(always), indexed)

    def rules_for(self, rows: Mapping[str, Mapping[str, Any] | None]) -> list[Rule]:
        """Return the rules whose ``if`` may hold on ``rows``: all but those an equality rules out."""
        if not self.indexed:
            return [rule for _, rule in self.always]
        found = list(self.always)
        for alias, column, buckets, every in self.indexed:
            row = rows.get(alias)
            if row is None:
                continue
            value = row.get(column)
            if value is None:
                continue
            try:
                found.extend(buckets.get(value, ()))
            except TypeError:
                # An unhashable value (a json column): evaluate every rule of the group.
                found.extend(every)
        if len(found) > 1:
            found.sort(key=_position)
        return [rule for _, rule in found]


def _position(item: tuple[int, Rule]) -> int:
    return item[0]


@dataclass(frozen=True)
class RuleSet:
    """An immutable set of loaded rules, indexed for event matching."""

    rules: tuple[Rule, ...] = ()
    by_id: dict[str, Rule] = field(default_factory=dict, compare=False)
    by_entity: dict[str, tuple[Rule, ...]] = field(default_factory=dict, compare=False)
    equalities: dict[str, Equality] = field(default_factory=dict, compare=False)
    # Filled on first use per event shape; the rule set itself never changes.
    _dispatch: dict[tuple[str, str, str | None, str | None], Dispatch] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> RuleSet:
        rules = tuple(rules)
        by_entity: dict[str, list[Rule]] = {}
        equalities: dict[str, Equality] = {}
        for rule in rules:
            if rule.enabled:
                by_entity.setdefault(rule.trigger.entity, []).append(rule)
                equality = if_equality(rule)
                if equality is not None:
                    equalities[rule.id] = equality
        return cls(
            rules=rules,
            by_id={rule.id: rule for rule in rules},
            by_entity={entity: tuple(found) for entity, found in by_entity.items()},
            equalities=equalities,
        )

    def dispatch(self, entity: str, kind: str, status_from: str | None, status_to: str | None) -> Dispatch:
        """Return the rules an event of this shape fires, before ``if``, with their equality index."""
        shape = (entity, kind, status_from, status_to)
        found = self._dispatch.get(shape)
        if found is None:
            found = Dispatch.of(self.matching(entity, kind, status_from, status_to), self.equalities)
            self._dispatch[shape] = found
        return found

    @property
    def enabled_ids(self) -> list[str]:
        return [rule.id for rule in self.rules if rule.enabled]

    def get(self, rule_id: str) -> Rule | None:
        return self.by_id.get(rule_id)

    def matching(self, entity: str, kind: str, status_from: str | None, status_to: str | None) -> list[Rule]:
        """Return the enabled rules whose trigger matches an event, before their ``if`` condition."""
        return [rule for rule in self.by_entity.get(entity, ()) if trigger_matches(rule, kind, status_from, status_to)]


def trigger_matches(rule: Rule, kind: str, status_from: str | None, status_to: str | None) -> bool:
    """Return whether an event of ``kind`` with these status values fires ``rule``'s trigger.

    A status change is also an update, so an ``updated`` trigger fires on
    ``status_changed`` events too. ``from`` and ``to`` filters apply to the
    event's old and new status.
    """
    trigger = rule.trigger
    if trigger.kind != kind and not (trigger.kind == "updated" and kind == "status_changed"):
        return False
    if trigger.from_statuses and status_from not in trigger.from_statuses:
        return False
    if trigger.to_statuses and status_to not in trigger.to_statuses:
        return False
    return True


def if_equality(rule: Rule) -> Equality | None:
    """Return the first ``alias.column == constant`` or ``alias.column in [constants]`` conjunct of the rule's ``if``.

    Only a conjunct at the top of an ``and`` chain qualifies, whose path is
    a column of the trigger entity or of a related alias, and whose
    constants are numbers or plain strings; anything else returns None and
    the rule is evaluated for every event its trigger matches.
    """
    condition = rule.trigger.condition
    if condition is None:
        return None
    from rulesd.rules.conditions import parse_condition

    tree, problems = parse_condition(condition.source)
    if tree is None or problems:
        return None
    for conjunct in _conjuncts(tree):
        equality = _equality(rule.trigger.entity, conjunct)
        if equality is not None:
            return equality
    return None


def _conjuncts(tree: Tree[Any]) -> list[Tree[Any]]:
    if isinstance(tree, Tree) and tree.data == "and_":
        return [part for child in tree.children for part in _conjuncts(child)]
    return [tree]


def _equality(entity: str, tree: Tree[Any]) -> Equality | None:
    if not isinstance(tree, Tree):
        return None
    if tree.data == "compare":
        left, op, right = tree.children
        if str(op) != "==":
            return None
        if not _is_path(left):
            left, right = right, left
        value = _literal(right)
        values = frozenset([value]) if value is not None else None
    elif tree.data == "in_":
        left, right = tree.children
        if not (isinstance(right, Tree) and right.data == "list"):
            return None
        items = [child for child in right.children if isinstance(child, Tree)]
        literals = [_literal(item) for item in items]
        values = frozenset(literals) if items and all(item is not None for item in literals) else None
    else:
        return None
    if values is None or not _is_path(left):
        return None
    parts = [str(token) for token in left.children if isinstance(token, Token)]
    if len(parts) != 2:
        return None
    alias, column = parts
    target = entity if alias == entity else None
    if target is None:
        path = related_entities(entity).get(alias)
        target = path[-1].entity if path else None
    if target is None or column not in {c.name for c in get_entity(target).all_columns}:
        return None
    return Equality(alias, column, values)


def _is_path(tree: Any) -> bool:
    return isinstance(tree, Tree) and tree.data == "path"


def _literal(tree: Any) -> Any:
    # The same values the condition compiler gives these literals: a
    # Decimal for a number, the unquoted text for a string without escapes.
    if not isinstance(tree, Tree) or len(tree.children) != 1:
        return None
    text = str(tree.children[0])
    if tree.data == "number":
        try:
            return Decimal(text)
        except InvalidOperation:
            return None
    if tree.data == "string" and "\\" not in text and len(text) >= 2:
        return text[1:-1]
    return None


def load_rule_set(paths: Sequence[Path]) -> RuleSet:
    """Load every rule under ``paths``; raise ``RuleError`` listing every error when any file fails."""
    from rulesd.rules.loader import load_rules

    result = load_rules([Path(path) for path in paths])
    if not result.ok:
        lines = [format_diagnostic(item) for item in result.diagnostics if _is_error(item)]
        error = RuleError(
            f"{len(lines)} error(s) in the rules under {', '.join(str(p) for p in paths)}:\n  " + "\n  ".join(lines),
            hint="run `rulesd validate` on the rules directory and fix each error",
        )
        error.errors = lines  # type: ignore[attr-defined]
        raise error
    return RuleSet.of(result.rules)


def format_diagnostic(item: Any) -> str:
    """Format a loader diagnostic as ``file:line:col: severity: message``."""
    path = getattr(item, "path", "")
    line = getattr(item, "line", None)
    column = getattr(item, "column", None)
    severity = getattr(item, "severity", "error")
    message = getattr(item, "message", str(item))
    where = ":".join(str(part) for part in (path, line, column) if part not in (None, ""))
    return f"{where}: {severity}: {message}" if where else f"{severity}: {message}"


def _is_error(item: Any) -> bool:
    return getattr(item, "severity", "error") == "error"


async def store_definitions(conn: psycopg.AsyncConnection[Any], rule_set: RuleSet) -> None:
    """Record each rule's version and source in ``workflow_definitions``."""
    async with conn.transaction():
        for rule in rule_set.rules:
            await conn.execute(
                """
                INSERT INTO workflow_definitions (rule_id, version, path, source)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (rule_id, version) DO UPDATE SET last_loaded_at = now(), path = EXCLUDED.path
                """,
                (rule.id, rule.version, rule.path, rule.source),
            )


async def cancel_unloaded(conn: psycopg.AsyncConnection[Any], rule_set: RuleSet, clock: Clock) -> int:
    """Cancel active enrollments of rules that are no longer loaded or are disabled; return how many."""
    disabled = [rule.id for rule in rule_set.rules if not rule.enabled]
    cursor = await conn.execute(
        """
        UPDATE workflow_instances
           SET status = 'cancelled',
               stop_reason = CASE WHEN rule_id = ANY(%(disabled)s)
                                  THEN 'rule ' || rule_id || ' was disabled'
                                  ELSE 'rule ' || rule_id || ' was removed from the rule set' END,
               finished_at = coalesce(%(now)s, now()),
               updated_at = coalesce(%(now)s, now()),
               next_run_at = NULL,
               lease_owner = NULL,
               lease_expires_at = NULL
         WHERE status = 'active' AND NOT (rule_id = ANY(%(enabled)s))
        RETURNING id, rule_id, stop_reason
        """,
        {"disabled": disabled, "enabled": rule_set.enabled_ids, "now": clock.sql_now()},
    )
    cancelled = await cursor.fetchall()
    for instance_id, rule_id, reason in cancelled:
        logger.info(
            "cancelled enrollment %s: %s",
            instance_id,
            reason,
            extra={"event": "enrollment_cancelled", "instance_id": instance_id, "rule_id": rule_id},
        )
    return len(cancelled)
