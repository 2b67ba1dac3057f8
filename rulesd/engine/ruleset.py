"""The rule set the daemon runs: loading, indexing by trigger, and swapping in a new version.

A reload that has any error keeps the previous rule set and logs every
error. Each loaded version is stored in ``workflow_definitions``;
enrollments of a rule that was removed or disabled are cancelled, and the
rest continue on the new version by step name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from rulesd.engine.clock import Clock
from rulesd.errors import RuleError
from rulesd.rules.model import Rule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleSet:
    """An immutable set of loaded rules, indexed for event matching."""

    rules: tuple[Rule, ...] = ()
    by_id: dict[str, Rule] = field(default_factory=dict, compare=False)
    by_entity: dict[str, tuple[Rule, ...]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> RuleSet:
        rules = tuple(rules)
        by_entity: dict[str, list[Rule]] = {}
        for rule in rules:
            if rule.enabled:
                by_entity.setdefault(rule.trigger.entity, []).append(rule)
        return cls(
            rules=rules,
            by_id={rule.id: rule for rule in rules},
            by_entity={entity: tuple(found) for entity, found in by_entity.items()},
        )

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
