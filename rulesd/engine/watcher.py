"""The rule set holder and the rules-directory watcher that reloads it.

``RuleHolder.current`` is the rule set every engine reads. ``reload``
swaps in a new set only when every file loads without error; otherwise it
keeps the previous set and logs every error. The watcher polls the rule
files' names, sizes and modification times, so it needs no inotify and
works on network file systems.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from psycopg_pool import AsyncConnectionPool

from rulesd.engine.clock import Clock
from rulesd.engine.ruleset import RuleSet, cancel_unloaded, load_rule_set, store_definitions
from rulesd.errors import RuleError
from rulesd.rules.loader import RULE_SUFFIXES, SCENARIO_SUFFIXES

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 2.0  # seconds between scans of the rules directory

Fingerprint = tuple[tuple[str, int, int], ...]


class RuleHolder:
    """Holds the current rule set and reloads it from ``paths``."""

    def __init__(self, paths: Sequence[Path], pool: AsyncConnectionPool[Any] | None, clock: Clock) -> None:
        self.paths = [Path(path) for path in paths]
        self._pool = pool
        self._clock = clock
        self.current = RuleSet()
        self.last_errors: list[str] = []
        self.fingerprint: Fingerprint = ()

    def get(self) -> RuleSet:
        return self.current

    async def reload(self, *, initial: bool = False) -> bool:
        """Load the rules again; swap them in and return True only when every file loaded cleanly.

        On the first load an error is raised as ``RuleError``, because a
        daemon with no rules has nothing to run; later errors keep the
        previous set.
        """
        self.fingerprint = fingerprint(self.paths)
        try:
            rule_set = await anyio.to_thread.run_sync(load_rule_set, self.paths)
        except RuleError as exc:
            self.last_errors = list(getattr(exc, "errors", [exc.message]))
            if initial:
                raise
            for line in self.last_errors:
                logger.error("rule reload failed: %s", line, extra={"event": "rule_reload_error"})
            logger.error(
                "kept the previous %s rule(s) because the new rule files have %s error(s)",
                len(self.current.rules), len(self.last_errors),
                extra={"event": "rule_reload_rejected", "errors": len(self.last_errors)},
            )
            return False
        self.last_errors = []
        await self._swap(rule_set)
        return True

    async def _swap(self, rule_set: RuleSet) -> None:
        if self._pool is not None:
            async with self._pool.connection() as conn:
                await store_definitions(conn, rule_set)
                await cancel_unloaded(conn, rule_set, self._clock)
        previous = {rule.id: rule.version for rule in self.current.rules}
        self.current = rule_set
        changed = [rule.id for rule in rule_set.rules if previous.get(rule.id) != rule.version]
        removed = sorted(set(previous) - set(rule_set.by_id))
        logger.info(
            "loaded %s rule(s) (%s enabled); new or changed: %s; removed: %s",
            len(rule_set.rules), len(rule_set.enabled_ids), ", ".join(changed) or "none", ", ".join(removed) or "none",
            extra={"event": "rules_loaded", "rules": len(rule_set.rules)},
        )

    def changed_on_disk(self) -> bool:
        return fingerprint(self.paths) != self.fingerprint


def fingerprint(paths: Sequence[Path]) -> Fingerprint:
    """Return the name, size and modification time of every rule file under ``paths``."""
    found: list[tuple[str, int, int]] = []
    for root in paths:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(root.rglob("*"))
        else:
            files = []
        for path in files:
            if path.suffix not in RULE_SUFFIXES or path.name.endswith(SCENARIO_SUFFIXES):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


async def watch_rules(holder: RuleHolder, interval: float = WATCH_INTERVAL) -> None:
    """Reload the rules whenever a rule file is added, removed or changed."""
    while True:
        await anyio.sleep(interval)
        if holder.changed_on_disk():
            logger.info("rule files changed; reloading", extra={"event": "rules_changed"})
            await holder.reload()
