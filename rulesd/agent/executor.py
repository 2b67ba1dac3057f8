"""The Claude step executor: checks that run before the model, the tool loop, and the outcome.

Before any token is spent the executor checks the ledger, the daily token
budget, quiet hours and frequency caps. A channel that already carried
this step's message is not offered again, and a row left pending by a
dead attempt becomes ``unknown`` and stops the step. Then the model runs
with only the tools still allowed, and the tools' outcome becomes the
``StepResult``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from rulesd.agent import ledger
from rulesd.agent.addresses import Channel
from rulesd.agent.budget import check_budget, record_usage
from rulesd.agent.caps import check_cap
from rulesd.agent.claude import ModelClient
from rulesd.agent.loop import LoopOutcome, run_tool_loop
from rulesd.agent.prompt import step_message, system_prompt
from rulesd.agent.quiet_hours import QuietHours, parse_quiet_hours
from rulesd.agent.recipients import load_contacts, load_recipient_zone
from rulesd.agent.timezones import timezone_for_state
from rulesd.agent.tools import CHANNEL_OF_TOOL, TOOL_OF_CHANNEL, Providers, StepState, ToolBox, tool_definitions
from rulesd.config import Settings
from rulesd.db.connect import async_connect
from rulesd.engine.executor import StepRequest, StepResult
from rulesd.engine.rows import load_rows
from rulesd.errors import DatabaseError, TransientAgentError
from rulesd.logs import log_context
from rulesd.servicetitan.catalog import related_entities

logger = logging.getLogger(__name__)

# Records the model always gets when the enrolled record reaches them, besides the rule's own aliases.
RECORD_ALIASES = ("customer", "location", "job", "estimate", "invoice")


@dataclass(frozen=True)
class Gate:
    """The result of the checks before the model: a final result, or the channels still open."""

    result: StepResult | None = None
    channels: tuple[Channel, ...] = ()


class ClaudeExecutor:
    """Carry out a step's plain-language action with Claude and the guarded tools."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        dry_run: bool,
        model: ModelClient,
        providers: Providers,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.dry_run = dry_run
        self.model = model
        self.providers = providers
        self.quiet_hours: QuietHours | None = parse_quiet_hours(settings.messaging.quiet_hours)
        self.business_zone = timezone_for_state(None, settings.business.timezone)

    async def aclose(self) -> None:
        """Close the HTTP clients of the model and the providers."""
        await self.model.close()
        for provider in (self.providers.sms, self.providers.email):
            close = getattr(provider, "close", None)
            if close is not None:
                await close()

    async def execute(self, request: StepRequest) -> StepResult:
        with log_context(rule_id=request.rule.id, instance_id=request.instance_id, step_run_id=request.step_run_id):
            try:
                conn = await async_connect(self.database_url, autocommit=True)
            except DatabaseError as exc:
                return StepResult("transient", detail=str(exc))
            try:
                return await self._execute(conn, request)
            except psycopg.Error as exc:
                logger.error("database error in step %s: %s", request.step.name, exc,
                             extra={"event": "step_database_error"})
                return StepResult("transient", detail=f"database error: {exc}")
            finally:
                await conn.close()

    async def _execute(self, conn: psycopg.AsyncConnection, request: StepRequest) -> StepResult:
        dry_run = self.dry_run or request.dry_run
        gate = await self._gate(conn, request, dry_run)
        if gate.result is not None:
            return gate.result

        contacts = await load_contacts(conn, request.customer_id, request.location_id)
        zone = await load_recipient_zone(conn, request.customer_id, request.location_id,
                                         self.settings.business.timezone)
        rows = await self._record_rows(conn, request)
        state = StepState()
        toolbox = ToolBox(
            conn=conn, request=request, settings=self.settings.messaging, contacts=contacts, zone=zone,
            quiet_hours=self.quiet_hours, providers=self.providers, dry_run=dry_run, state=state,
        )
        tools = tuple(TOOL_OF_CHANNEL[channel] for channel in gate.channels)
        base_params = self._base_params(tools)
        first = step_message(request.action, rows, contacts,
                             local_time=request.context.now.astimezone(zone), tools=(*tools, "skip"))

        async def on_usage(model: str, usage: dict[str, int]) -> None:
            await record_usage(conn, instance_id=request.instance_id, step_run_id=request.step_run_id,
                               rule_id=request.rule.id, step_name=request.step.name, model=model,
                               usage=usage, called_at=request.context.now)

        outcome = await run_tool_loop(
            model=self.model, base_params=base_params, first_message=first, toolbox=toolbox, state=state,
            max_turns=max(self.settings.agent.max_turns, 1), on_usage=on_usage,
        )
        result = step_result(state, outcome, self.settings.agent.max_turns)
        logger.info("step %s finished: %s %s", request.step.name, result.outcome, result.detail,
                    extra={"event": "agent_step_finished", "outcome": result.outcome, **outcome.usage})
        return result

    async def _record_rows(self, conn: psycopg.AsyncConnection, request: StepRequest) -> dict[str, Any]:
        """Return the engine's rows plus the standard related records the rule itself does not read."""
        rows: dict[str, Any] = dict(request.context.rows)
        reachable = related_entities(request.entity)
        missing = [alias for alias in RECORD_ALIASES if alias in reachable and alias not in rows]
        if missing:
            loaded = await load_rows(conn, request.entity, [request.entity_id], [*rows, *missing])
            for alias in missing:
                rows[alias] = loaded[request.entity_id].get(alias)
        return rows

    def _base_params(self, tools: tuple[str, ...]) -> dict[str, Any]:
        agent = self.settings.agent
        # NOTE: agent.temperature is not sent. The anthropic SDK 2.x removed the
        # sampling parameters and API version 2026-10-21, which it sends, rejects them.
        return {
            "model": agent.model,
            "max_tokens": agent.max_tokens,
            "system": system_prompt(self.settings.business, self.settings.messaging),
            "tools": tool_definitions(tools),
            "messages": [],
        }

    async def _gate(self, conn: psycopg.AsyncConnection, request: StepRequest, dry_run: bool) -> Gate:
        wanted = [CHANNEL_OF_TOOL[tool] for tool in request.step.tools if tool in CHANNEL_OF_TOOL]
        earlier = await self._earlier_attempts(conn, request, wanted)
        if earlier.result is not None:
            return earlier
        channels = earlier.channels
        if not dry_run:
            unconfigured = [channel for channel in channels if self._provider(channel) is None]
            channels = tuple(channel for channel in channels if channel not in unconfigured)
            if unconfigured and not channels:
                keys = " or ".join("sms.provider" if channel == "sms" else "email.provider" for channel in unconfigured)
                return Gate(StepResult("failed", detail=f"no provider is configured for {', '.join(unconfigured)}; "
                                                        f"set {keys}, or run with --dry-run"))

        budget = await check_budget(conn, self.settings.agent.daily_token_budget, request.context.now,
                                    self.business_zone)
        if budget.exhausted:
            logger.warning(
                "daily token budget spent (%d of %d tokens); agent steps pause until %s",
                budget.spent, budget.budget, budget.resets_at.isoformat(),
                extra={"event": "token_budget_spent", "spent": budget.spent, "budget": budget.budget},
            )
            return Gate(StepResult("deferred", detail="daily token budget spent", defer_until=budget.resets_at))
        if not channels:
            return Gate(channels=())

        zone = await load_recipient_zone(conn, request.customer_id, request.location_id,
                                         self.settings.business.timezone)
        if self.quiet_hours is not None:
            until = self.quiet_hours.quiet_until(request.context.now, zone)
            if until is not None:
                logger.info("step deferred to %s: quiet hours in %s", until.isoformat(), zone.key,
                            extra={"event": "step_deferred", "reason": "quiet_hours"})
                return Gate(StepResult("deferred", detail=f"quiet hours in {zone.key}", defer_until=until))
        return await self._apply_caps(conn, request, channels, dry_run)

    def _provider(self, channel: Channel) -> object | None:
        return self.providers.sms if channel == "sms" else self.providers.email

    async def _earlier_attempts(
        self, conn: psycopg.AsyncConnection, request: StepRequest, wanted: list[Channel]
    ) -> Gate:
        """Drop channels an earlier attempt used; stop on a row whose outcome is unknown."""
        open_channels = list(wanted)
        for entry in await ledger.step_entries(conn, request.instance_id, request.step.name):
            if entry.status == "pending" and entry.step_run_id != request.step_run_id:
                await ledger.mark_unknown(conn, entry.id, "an earlier attempt stopped before the provider answered")
                entry = _with_status(entry, "unknown")
            if entry.status == "unknown":
                detail = (f"the {entry.channel} to {entry.recipient} (ledger row {entry.id}) has an unknown "
                          "outcome; it is not sent again until a person checks it")
                return Gate(StepResult("failed", detail=detail))
            if entry.status in ("sent", "dry_run") and entry.channel in open_channels:
                open_channels.remove(entry.channel)
        if wanted and not open_channels:
            return Gate(StepResult("done", detail="every message of this step was already sent by an earlier attempt"))
        return Gate(channels=tuple(open_channels))

    async def _apply_caps(
        self, conn: psycopg.AsyncConnection, request: StepRequest, channels: tuple[Channel, ...], dry_run: bool
    ) -> Gate:
        """Keep the channels under their caps; with none left, defer or skip as configured."""
        open_channels: list[Channel] = []
        blocked_until: list[datetime] = []
        reasons: list[str] = []
        for channel in channels:
            cap = await check_cap(conn, self.settings.messaging, request.customer_id, channel,
                                  request.context.now, dry_run=dry_run)
            if cap.allowed:
                open_channels.append(channel)
                continue
            reasons.append(cap.reason)
            if cap.allowed_at is not None:
                blocked_until.append(cap.allowed_at)
        if open_channels:
            return Gate(channels=tuple(open_channels))

        detail = "frequency cap: " + "; ".join(reasons)
        if self.settings.messaging.on_cap == "defer" and blocked_until:
            until = min(blocked_until)
            logger.info("step deferred to %s: %s", until.isoformat(), detail,
                        extra={"event": "step_deferred", "reason": "frequency_cap"})
            return Gate(StepResult("deferred", detail=detail, defer_until=until))
        logger.info("step skipped: %s", detail, extra={"event": "step_skipped", "reason": "frequency_cap"})
        return Gate(StepResult("skipped", detail=detail))


def _with_status(entry: ledger.LedgerEntry, status: ledger.Status) -> ledger.LedgerEntry:
    return replace(entry, status=status)


def step_result(state: StepState, outcome: LoopOutcome, max_turns: int) -> StepResult:
    """Turn what the tools and the model did into the engine's outcome."""
    def result(kind: Any, detail: str, defer_until: datetime | None = None) -> StepResult:
        return StepResult(kind, detail=detail, defer_until=defer_until,
                          transcript=outcome.transcript, usage=dict(outcome.usage))

    if state.stop == "deferred":
        return result("deferred", state.stop_detail, state.defer_until)
    if state.stop == "transient":
        return result("transient", state.stop_detail)
    if state.stop == "unknown":
        return result("failed", state.stop_detail)
    if state.sent:
        sent = ", ".join(f"{entry.channel} to {entry.recipient}" for entry in state.sent.values())
        return result("done", f"sent {sent}")
    if state.stop == "skipped":
        return result("skipped", state.stop_detail)
    if outcome.error is not None:
        kind = "transient" if isinstance(outcome.error, TransientAgentError) else "failed"
        return result(kind, outcome.error.message)
    if state.failures:
        return result("failed", "; ".join(state.failures))
    if outcome.turn_limit_reached:
        return result("failed", f"turn limit of {max_turns} reached before a message was sent or the step skipped")
    detail = "the model ended its turn without sending a message or calling skip"
    if state.rejections:
        detail += "; rejected: " + "; ".join(state.rejections)
    return result("failed", detail)
