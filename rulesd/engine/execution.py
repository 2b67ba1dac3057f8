"""The execution engine: claim due enrollments with a lease and carry out their current step.

For each claimed enrollment the engine re-checks ``stop_if`` on live rows
and skips the step when its ``when`` is false. Outside the step's window
it defers the step to the window's next opening. Otherwise it runs the
executor, records the attempt, and advances to the next step or completes
the enrollment. Every write-back is fenced on the
lease token, so a step whose lease expired cannot overwrite a newer outcome.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from rulesd.config import EngineSettings
from rulesd.engine import metrics, store
from rulesd.engine.clock import Clock
from rulesd.engine.evaluate import evaluate_condition
from rulesd.engine.executor import StepExecutor, StepRequest, StepResult
from rulesd.engine.rows import load_rows
from rulesd.engine.ruleset import RuleSet
from rulesd.logs import log_context
from rulesd.rules.model import EvalContext, Rule, Step

logger = logging.getLogger(__name__)

RETRY_BASE = 30.0  # seconds before the first retry of a transient failure
RETRY_MAX = 3600.0  # seconds; the longest wait between retries


@dataclass(frozen=True)
class StepOutcome:
    """The result of the current step of one claimed enrollment, for tests and the scenario runner."""

    instance_id: int
    step: str | None
    status: str  # done, skipped, deferred, failed, transient, stopped, cancelled, lease_lost
    detail: str = ""


def retry_delay(attempt: int) -> timedelta:
    """Return the wait before retry ``attempt + 1``: exponential from 30 s, capped at 1 h, with ±20 % jitter."""
    base = min(RETRY_MAX, RETRY_BASE * 2 ** max(0, attempt - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


class ExecutionEngine:
    """Claims due enrollments and runs their steps; ``run_due`` is one round, the daemon loops it."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        rules: Callable[[], RuleSet],
        clock: Clock,
        settings: EngineSettings,
        executor: StepExecutor,
        *,
        owner: uuid.UUID,
        database_url: str,
        dry_run: bool = False,
        timezone: str = "UTC",
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock
        self._settings = settings
        self._executor = executor
        self.owner = owner
        self._database_url = database_url
        self._dry_run = dry_run
        self._timezone = timezone
        self.running = 0

    async def paused_rule_ids(self) -> set[str]:
        async with self._pool.connection() as conn:
            states = await store.rule_states(conn)
        return {rule_id for rule_id, state in states.items() if state["paused_at"] is not None}

    async def runnable_rule_ids(self) -> list[str]:
        """Return the ids of loaded, enabled rules that are not paused."""
        paused = await self.paused_rule_ids()
        return [rule_id for rule_id in self._rules().enabled_ids if rule_id not in paused]

    async def next_due_at(self) -> datetime | None:
        rule_ids = await self.runnable_rule_ids()
        async with self._pool.connection() as conn:
            return await store.next_due_at(conn, rule_ids)

    async def claim(self, limit: int) -> list[store.Claim]:
        """Claim up to ``limit`` due enrollments of runnable rules."""
        rule_ids = await self.runnable_rule_ids()
        async with self._pool.connection() as conn:
            return await store.claim_due(
                conn,
                owner=self.owner,
                limit=limit,
                lease=self._settings.lease,
                rule_ids=rule_ids,
                now=self._clock.sql_now(),
            )

    async def run_due(self, limit: int | None = None) -> list[StepOutcome]:
        """Claim due enrollments and run them one after another (scenario tests and benchmarks)."""
        claims = await self.claim(limit or self._settings.max_concurrent_steps)
        return [await self.run_claim(claim) for claim in claims]

    async def run_claim(self, claim: store.Claim) -> StepOutcome:
        """Carry out the current step of one claimed enrollment, renewing its lease meanwhile."""
        self.running += 1
        metrics.RUNNING_STEPS.inc()
        try:
            with log_context(instance_id=claim.instance_id, rule_id=claim.rule_id):
                async with anyio.create_task_group() as group:
                    group.start_soon(self._renew_lease, claim)
                    try:
                        return await self._run_step(claim)
                    finally:
                        group.cancel_scope.cancel()
        finally:
            self.running -= 1
            metrics.RUNNING_STEPS.dec()

    async def _renew_lease(self, claim: store.Claim) -> None:
        # A third of the lease leaves two chances to renew before it expires.
        # Leases expire on the database's real clock, whatever the engine clock is.
        third = self._settings.lease / 3
        while True:
            await anyio.sleep(third.total_seconds())
            try:
                async with self._pool.connection() as conn:
                    renewed = await store.renew_lease(conn, claim, self.owner, self._settings.lease, self._clock.sql_now())
            except psycopg.Error as exc:
                logger.warning(
                    "renewing the lease of enrollment %s failed: %s", claim.instance_id, exc,
                    extra={"event": "lease_renew_failed", "instance_id": claim.instance_id},
                )
                continue
            if not renewed:
                logger.warning(
                    "lost the lease of enrollment %s; its outcome will not change the enrollment",
                    claim.instance_id,
                    extra={"event": "lease_lost", "instance_id": claim.instance_id},
                )
                return

    async def _run_step(self, claim: store.Claim) -> StepOutcome:
        rule = self._rules().get(claim.rule_id)
        if rule is None or not rule.enabled:
            return await self._finish(claim, "cancelled", None, f"rule {claim.rule_id} is not loaded or is disabled")
        step = rule.step(claim.current_step) if claim.current_step else None
        if step is None:
            reason = f"step {claim.current_step!r} is no longer in rule {rule.id}"
            return await self._finish(claim, "cancelled", claim.current_step, reason)

        now = self._clock.now()
        async with self._pool.connection() as conn:
            await store.abandon_earlier_runs(conn, claim, self._clock.sql_now())
            rows = (await load_rows(conn, claim.entity, [claim.entity_id], rule.aliases))[claim.entity_id]
        context = EvalContext(rows=rows, now=now, event={})

        if rows.get(claim.entity) is None:
            reason = f"{claim.entity} {claim.entity_id} no longer exists in the mirror"
            return await self._finish(claim, "stopped", step.name, reason)
        if rule.stop_if is not None and evaluate_condition(rule.stop_if, context, rule, "stop_if"):
            return await self._finish(claim, "stopped", step.name, f"stop_if held before step {step.name}: {rule.stop_if.source}")
        if step.when is not None and not evaluate_condition(step.when, context, rule, f"step {step.name} when"):
            return await self._skip(claim, rule, step, f"when was false: {step.when.source}")
        if step.window is not None:
            allowed = step.window.next_allowed(now, self._timezone)
            if allowed > now:
                return await self._defer(claim, step, allowed, f"outside the window {step.window.source}")
        return await self._execute(claim, rule, step, context)

    async def _execute(self, claim: store.Claim, rule: Rule, step: Step, context: EvalContext) -> StepOutcome:
        attempt = claim.attempt + 1
        sql_now = self._clock.sql_now()
        action = step.action.render(context)
        dry_run = self._dry_run or rule.mode == "shadow"
        async with self._pool.connection() as conn:
            async with conn.transaction():
                if not await store.start_attempt(conn, claim, self.owner, attempt, sql_now):
                    return StepOutcome(claim.instance_id, step.name, "lease_lost", "lease lost before the step ran")
                step_run_id = await store.record_step_run(
                    conn, claim, self.owner, step=step.name, attempt=attempt, status="running",
                    action=action, dry_run=dry_run, now=sql_now,
                )
        if claim.due_at is not None:
            metrics.STEP_LAG.observe(max(0.0, (self._clock.now() - claim.due_at).total_seconds()))
        logger.info(
            "running step %s of enrollment %s (attempt %s)", step.name, claim.instance_id, attempt,
            extra={"event": "step_started", "step_run_id": step_run_id, "step": step.name},
        )
        logger.debug("step %s action: %s", step.name, action, extra={"event": "step_action"})

        request = StepRequest(
            instance_id=claim.instance_id,
            step_run_id=step_run_id,
            attempt=attempt,
            rule=rule,
            step=step,
            action=action,
            context=context,
            entity=claim.entity,
            entity_id=claim.entity_id,
            customer_id=claim.customer_id,
            location_id=claim.location_id,
            dry_run=dry_run,
            database_url=self._database_url,
        )
        result = await self._call_executor(request)
        return await self._record(claim, rule, step, step_run_id, attempt, result)

    async def _call_executor(self, request: StepRequest) -> StepResult:
        try:
            return await self._executor.execute(request)
        except Exception as exc:  # noqa: BLE001 - an executor bug becomes a retried failure, not a crash
            logger.exception(
                "the executor raised on step %s of enrollment %s", request.step.name, request.instance_id,
                extra={"event": "executor_raised", "step_run_id": request.step_run_id},
            )
            return StepResult(outcome="transient", detail=f"executor raised {type(exc).__name__}: {exc}")

    async def _record(
        self, claim: store.Claim, rule: Rule, step: Step, step_run_id: int, attempt: int, result: StepResult
    ) -> StepOutcome:
        sql_now = self._clock.sql_now()
        outcome = result.outcome
        fields: dict[str, Any]
        if outcome in ("done", "skipped"):
            fields = self._advance_fields(rule, step)
        elif outcome == "deferred":
            defer_until = result.defer_until or self._clock.now() + timedelta(minutes=15)
            # A deferral does not count as an attempt.
            fields = {"current_step": step.name, "attempt": attempt - 1, "next_run_at": defer_until}
        elif outcome == "transient" and attempt < self._settings.max_attempts:
            fields = {"current_step": step.name, "attempt": attempt, "run_after": retry_delay(attempt)}
        else:
            detail = result.detail or outcome
            error = f"step {step.name} failed after {attempt} attempt(s): {detail}"
            fields = {"status": "failed", "current_step": step.name, "attempt": attempt, "error": error}

        async with self._pool.connection() as conn:
            async with conn.transaction():
                kept = await store.write_back(conn, claim, self.owner, now=sql_now, **fields)
                await store.finish_step_run(
                    conn, step_run_id, status=outcome, detail=result.detail, defer_until=result.defer_until,
                    transcript=result.transcript, usage=result.usage, lease_lost=not kept, now=sql_now,
                )
        metrics.STEPS.labels(rule.id, outcome).inc()
        status = outcome if kept else "lease_lost"
        self._log_outcome(claim, step, step_run_id, outcome, result.detail, kept, fields)
        return StepOutcome(claim.instance_id, step.name, status, result.detail)

    def _advance_fields(self, rule: Rule, step: Step) -> dict[str, Any]:
        index = [s.name for s in rule.steps].index(step.name)
        if index + 1 >= len(rule.steps):
            return {"status": "completed", "current_step": step.name, "step_index": index, "attempt": 0}
        following = rule.steps[index + 1]
        # ``after`` counts from the end of the previous step.
        return {"current_step": following.name, "step_index": index + 1, "attempt": 0, "run_after": following.after}

    async def _skip(self, claim: store.Claim, rule: Rule, step: Step, detail: str) -> StepOutcome:
        sql_now = self._clock.sql_now()
        async with self._pool.connection() as conn:
            async with conn.transaction():
                kept = await store.write_back(conn, claim, self.owner, now=sql_now, **self._advance_fields(rule, step))
                if kept:
                    await store.record_step_run(
                        conn, claim, self.owner, step=step.name, attempt=claim.attempt, status="skipped",
                        detail=detail, now=sql_now,
                    )
        metrics.STEPS.labels(rule.id, "skipped").inc()
        logger.info(
            "skipped step %s of enrollment %s: %s", step.name, claim.instance_id, detail,
            extra={"event": "step_skipped", "step": step.name},
        )
        return StepOutcome(claim.instance_id, step.name, "skipped" if kept else "lease_lost", detail)

    async def _defer(self, claim: store.Claim, step: Step, until: datetime, detail: str) -> StepOutcome:
        sql_now = self._clock.sql_now()
        async with self._pool.connection() as conn:
            async with conn.transaction():
                kept = await store.write_back(conn, claim, self.owner, now=sql_now, current_step=step.name, next_run_at=until)
                if kept:
                    await store.record_step_run(
                        conn, claim, self.owner, step=step.name, attempt=claim.attempt, status="deferred",
                        detail=detail, defer_until=until, now=sql_now,
                    )
        metrics.STEPS.labels(claim.rule_id, "deferred").inc()
        logger.info(
            "deferred step %s of enrollment %s to %s: %s", step.name, claim.instance_id, until.isoformat(), detail,
            extra={"event": "step_deferred", "step": step.name},
        )
        return StepOutcome(claim.instance_id, step.name, "deferred" if kept else "lease_lost", detail)

    async def _finish(self, claim: store.Claim, status: str, step: str | None, reason: str) -> StepOutcome:
        async with self._pool.connection() as conn:
            kept = await store.write_back(
                conn, claim, self.owner, now=self._clock.sql_now(), status=status, current_step=step, stop_reason=reason
            )
        if status == "stopped":
            metrics.STOPS.labels(claim.rule_id).inc()
        logger.info(
            "%s enrollment %s: %s", status, claim.instance_id, reason,
            extra={"event": f"enrollment_{status}", "step": step},
        )
        return StepOutcome(claim.instance_id, step, status if kept else "lease_lost", reason)

    def _log_outcome(
        self, claim: store.Claim, step: Step, step_run_id: int, outcome: str, detail: str, kept: bool, fields: dict[str, Any]
    ) -> None:
        extra = {"event": f"step_{outcome}", "step_run_id": step_run_id, "step": step.name}
        if not kept:
            logger.warning(
                "step %s of enrollment %s finished (%s) after its lease was lost; the enrollment was not changed",
                step.name, claim.instance_id, outcome, extra={**extra, "event": "step_lease_lost"},
            )
        elif fields.get("status") == "failed":
            logger.error("enrollment %s failed: %s", claim.instance_id, fields["error"], extra={**extra, "event": "enrollment_failed"})
        elif outcome == "transient":
            logger.warning(
                "step %s of enrollment %s failed and will be retried: %s", step.name, claim.instance_id, detail, extra=extra
            )
        else:
            logger.info("step %s of enrollment %s: %s %s", step.name, claim.instance_id, outcome, detail, extra=extra)
