"""The step executor contract between the execution engine and whatever carries out a step.

The engine decides when a step runs; an executor decides what running it
means. ``RecordingExecutor`` stores the rendered action and sends nothing;
``rulesd.agent`` provides the Claude executor that drafts and sends messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from rulesd.rules.model import EvalContext, Rule, Step

Outcome = Literal["done", "skipped", "deferred", "failed", "transient"]


@dataclass(frozen=True)
class StepRequest:
    """One attempt at one step of one enrollment."""

    instance_id: int
    step_run_id: int
    attempt: int
    rule: Rule
    step: Step
    action: str  # the step's ``do:`` text with placeholders filled
    context: EvalContext  # current rows of the enrolled record and its relations
    entity: str
    entity_id: int
    customer_id: int | None
    location_id: int | None
    dry_run: bool  # the daemon runs with --dry-run or the rule is in shadow mode
    database_url: str


@dataclass(frozen=True)
class StepResult:
    """What an executor did. ``transient`` asks the engine to retry with backoff.

    ``deferred`` asks the engine to run the same step again at ``defer_until``
    (quiet hours, a frequency cap) without counting an attempt.
    """

    outcome: Outcome
    detail: str = ""
    defer_until: datetime | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)


class StepExecutor(Protocol):
    async def execute(self, request: StepRequest) -> StepResult:
        """Carry out ``request``; raise nothing for expected failures, return them instead."""
        ...


class RecordingExecutor:
    """An executor that records the rendered action and sends nothing."""

    async def execute(self, request: StepRequest) -> StepResult:
        return StepResult(
            outcome="done",
            detail="recorded; no executor configured to send messages",
            transcript=[{"type": "action", "text": request.action}],
        )
