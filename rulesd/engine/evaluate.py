"""Evaluate a rule's condition inside the daemon, where a failure must not stop the engine."""

from __future__ import annotations

import logging
from typing import Any

from rulesd.rules.model import EvalContext, Rule

logger = logging.getLogger(__name__)


def evaluate_condition(condition: Any, context: EvalContext, rule: Rule, where: str) -> bool:
    """Return the condition's value; log a failure with the rule id and treat it as false."""
    try:
        return bool(condition.evaluate(context))
    except Exception:  # noqa: BLE001 - a broken condition must not stop the daemon
        logger.exception(
            "evaluating %s of rule %s failed; treating it as false", where, rule.id,
            extra={"event": "condition_failed", "rule_id": rule.id},
        )
        return False
