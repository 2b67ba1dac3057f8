"""The tools the model may call (send_sms, send_email, skip) and the guards behind them.

Every guard runs here, in code, on every call, whatever the prompt contains:
the recipient must be one of the enrolled customer's or location's
contacts, a suppressed address is never messaged, quiet hours and
frequency caps stop the step, messages have size limits, and each channel
carries at most one message per step. Each message is written to the
ledger and committed before the provider is called.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg

from rulesd.agent import ledger
from rulesd.agent.addresses import Channel, normalize_address
from rulesd.agent.caps import check_cap
from rulesd.agent.prompt import CACHE_CONTROL
from rulesd.agent.providers import EmailProvider, SmsProvider
from rulesd.agent.quiet_hours import QuietHours
from rulesd.agent.recipients import Contact, load_contacts, resolve, shorten
from rulesd.agent.suppressions import add_suppression, is_suppressed
from rulesd.config import MessagingSettings
from rulesd.engine.executor import StepRequest
from rulesd.errors import DeliveryUnknownError, ProviderError

logger = logging.getLogger(__name__)

CHANNEL_OF_TOOL: dict[str, Channel] = {"send_sms": "sms", "send_email": "email"}
TOOL_OF_CHANNEL: dict[Channel, str] = {"sms": "send_sms", "email": "send_email"}
# First key of the two-key advisory locks on a customer's channel; the second is a hash of both.
CAP_LOCK_CLASS = 0x72756C64  # "ruld" in ASCII
SUBJECT_MAX_LENGTH = 200  # characters; longer subjects are cut by many mail clients

TOOL_DEFINITIONS: dict[str, dict[str, Any]] = {
    "send_sms": {
        "name": "send_sms",
        "description": (
            "Send one text message to the customer. Leave `to` out to use the customer's "
            "preferred mobile number; give `to` only to choose another phone number listed "
            "in the contacts. Returns the delivery result or the reason it was rejected."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "description": "a phone number from the contacts; optional"},
                "body": {"type": "string", "description": "the message text, plain, ending with the sign-off"},
            },
            "required": ["body"],
        },
    },
    "send_email": {
        "name": "send_email",
        "description": (
            "Send one plain-text e-mail to the customer. Leave `to` out to use the customer's "
            "preferred e-mail address; give `to` only to choose another address listed in the "
            "contacts. Returns the delivery result or the reason it was rejected."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "description": "an e-mail address from the contacts; optional"},
                "subject": {"type": "string", "description": "a short, specific subject line"},
                "body": {"type": "string", "description": "the plain-text body, ending with the sign-off"},
            },
            "required": ["subject", "body"],
        },
    },
    "skip": {
        "name": "skip",
        "description": (
            "Send nothing for this step, because no message fits: the matter is settled, the "
            "customer asked not to be contacted, or the needed data is missing."
        ),
        "input_schema": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "one sentence for the office's log"}},
            "required": ["reason"],
        },
    },
}


def tool_definitions(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Return the definitions of ``names`` plus skip; the last one carries the cache marker."""
    ordered = [name for name in ("send_sms", "send_email") if name in names] + ["skip"]
    definitions = [dict(TOOL_DEFINITIONS[name]) for name in ordered]
    definitions[-1]["cache_control"] = CACHE_CONTROL
    return definitions


@dataclass(frozen=True)
class ToolResult:
    """The content of a ``tool_result`` block returned to the model."""

    content: str
    is_error: bool = False


StopKind = Literal["deferred", "skipped", "transient", "unknown"]


@dataclass
class StepState:
    """The record of one step's tool calls, which the executor turns into a ``StepResult``."""

    sent: dict[Channel, ledger.LedgerEntry] = field(default_factory=dict)
    stop: StopKind | None = None
    stop_detail: str = ""
    defer_until: datetime | None = None
    failures: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)


@dataclass
class Providers:
    sms: SmsProvider | None = None
    email: EmailProvider | None = None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@asynccontextmanager
async def customer_channel_lock(
    conn: psycopg.AsyncConnection, customer_id: int | None, channel: Channel
) -> AsyncIterator[None]:
    """Hold a session advisory lock on (customer, channel) on ``conn``, which must be in autocommit."""
    if customer_id is None:
        yield
        return
    key = (CAP_LOCK_CLASS, f"{channel}:{customer_id}")
    await conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", key)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)


class ToolBox:
    """Carry out one step's tool calls against the ledger, the guards and the providers."""

    def __init__(
        self,
        *,
        conn: psycopg.AsyncConnection,
        request: StepRequest,
        settings: MessagingSettings,
        contacts: list[Contact],
        zone: ZoneInfo,
        quiet_hours: QuietHours | None,
        providers: Providers,
        dry_run: bool,
        state: StepState,
    ) -> None:
        self.conn = conn
        self.request = request
        self.settings = settings
        self.contacts = contacts
        self.zone = zone
        self.quiet_hours = quiet_hours
        self.providers = providers
        self.dry_run = dry_run
        self.state = state

    async def call(self, name: str, arguments: Any) -> ToolResult:
        """Run tool ``name``; every rejection comes back as an error result, never an exception."""
        if not isinstance(arguments, dict):
            return ToolResult("invalid input: expected an object of named arguments", is_error=True)
        if name == "skip":
            return self._skip(arguments)
        channel = CHANNEL_OF_TOOL.get(name)
        if channel is None:
            return ToolResult(f"unknown tool {name!r}", is_error=True)
        return await self._send(channel, arguments)

    def _skip(self, arguments: dict[str, Any]) -> ToolResult:
        reason = str(arguments.get("reason") or "").strip() or "no reason given"
        if self.state.sent:
            return ToolResult("a message was already sent in this step; skip has no effect", is_error=True)
        self.state.stop = "skipped"
        self.state.stop_detail = reason
        return ToolResult("skipped; nothing will be sent for this step")

    async def _send(self, channel: Channel, arguments: dict[str, Any]) -> ToolResult:
        to = arguments.get("to")
        body = arguments.get("body")
        subject = arguments.get("subject") if channel == "email" else None
        problem = self._check_input(channel, to, body, subject)
        if problem:
            return ToolResult(problem, is_error=True)
        assert isinstance(body, str)
        if channel in self.state.sent:
            return ToolResult(f"a {channel} message was already sent in this step; only one is allowed",
                              is_error=True)

        # The contacts are read again, not taken from the prompt's copy: a contact can turn
        # inactive or opt out while the model is still writing the message.
        contacts = await load_contacts(self.conn, self.request.customer_id, self.request.location_id)
        resolution = resolve(contacts, channel, to if isinstance(to, str) else None)
        if resolution.contact is None or resolution.contact.address is None:
            displayed = normalize_address(channel, to) if isinstance(to, str) else None
            displayed = shorten(displayed or (to if isinstance(to, str) and to else "(preferred)"))
            return await self._reject(channel, displayed, body, subject, resolution.refusal)
        recipient = resolution.contact.address
        if await is_suppressed(self.conn, channel, recipient):
            return await self._reject(channel, recipient, body, subject,
                                      f"{recipient} has opted out of {channel} messages")

        intent = self._intent(channel, recipient, body, subject)
        # The cap check and the ledger write form one step per customer and channel. Without the
        # lock, two enrollments of one customer could both pass a cap of 1 and both send.
        async with customer_channel_lock(self.conn, self.request.customer_id, channel):
            stop = await self._check_timing(channel)
            if stop is not None:
                return stop
            reserved = await self._reserve(intent)
        if isinstance(reserved, ToolResult):
            return reserved
        return await self._deliver(intent, *reserved)

    def _check_input(self, channel: Channel, to: Any, body: Any, subject: Any) -> str:
        if to is not None and not isinstance(to, str):
            return "invalid input: `to` must be a string"
        if not isinstance(body, str) or not body.strip():
            return "invalid input: `body` is missing or empty"
        for name, text in (("to", to), ("body", body), ("subject", subject)):
            # JSON may carry a lone surrogate (\ud800), which no provider or database can encode.
            if isinstance(text, str) and not _encodable(text):
                return f"invalid input: `{name}` contains invalid Unicode (a lone surrogate)"
        if channel == "sms" and len(body) > self.settings.sms_max_length:
            return (f"the text is {len(body)} characters; the limit is {self.settings.sms_max_length}. "
                    "Shorten it and send again.")
        if channel == "email":
            if not isinstance(subject, str) or not subject.strip():
                return "invalid input: `subject` is missing or empty"
            # splitlines() also breaks at \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029, which the
            # e-mail library rejects in a header as it rejects \r and \n.
            if subject.splitlines() != [subject]:
                return "invalid input: the subject must be one line"
            if len(subject) > SUBJECT_MAX_LENGTH:
                return f"the subject is {len(subject)} characters; the limit is {SUBJECT_MAX_LENGTH}"
            size = len(body.encode("utf-8")) + len(subject.encode("utf-8"))
            if size > self.settings.email_max_bytes:
                return f"the e-mail is {size} bytes; the limit is {self.settings.email_max_bytes}. Shorten it."
        return ""

    async def _check_timing(self, channel: Channel) -> ToolResult | None:
        """Stop the step when quiet hours or a frequency cap forbid sending now."""
        now = self.request.context.now
        if self.quiet_hours is not None:
            until = self.quiet_hours.quiet_until(now, self.zone)
            if until is not None:
                self.state.stop = "deferred"
                self.state.defer_until = until
                self.state.stop_detail = "quiet hours in the customer's time zone"
                return ToolResult("it is quiet hours for the customer; the step is deferred and nothing was sent")

        cap = await check_cap(self.conn, self.settings, self.request.customer_id, channel, now, dry_run=self.dry_run)
        if cap.allowed:
            return None
        if self.settings.on_cap == "defer" and cap.allowed_at is not None:
            self.state.stop = "deferred"
            self.state.defer_until = cap.allowed_at
        else:
            self.state.stop = "skipped"
        self.state.stop_detail = f"frequency cap: {cap.reason}"
        return ToolResult(f"not sent: {cap.reason}; the step ends here")

    def _intent(self, channel: Channel, recipient: str, body: str, subject: str | None) -> ledger.Intent:
        request = self.request
        return ledger.Intent(
            instance_id=request.instance_id,
            step_run_id=request.step_run_id,
            attempt=request.attempt,
            rule_id=request.rule.id,
            step_name=request.step.name,
            channel=channel,
            recipient=recipient,
            customer_id=request.customer_id,
            location_id=request.location_id,
            body=body,
            subject=subject,
            created_at=request.context.now,
        )

    async def _reject(self, channel: Channel, recipient: str, body: str, subject: Any, reason: str) -> ToolResult:
        intent = self._intent(channel, recipient, body, subject if isinstance(subject, str) else None)
        await ledger.record_refusal(self.conn, intent, reason)
        self.state.rejections.append(reason)
        logger.warning(
            "rejected %s to %s: %s", channel, recipient, reason,
            extra={"event": "message_rejected", "channel": channel, "instance_id": self.request.instance_id,
                   "step_run_id": self.request.step_run_id, "rule_id": self.request.rule.id},
        )
        return ToolResult(f"rejected: {reason}. Nothing was sent.", is_error=True)

    async def _reserve(
        self, intent: ledger.Intent
    ) -> ToolResult | tuple[ledger.LedgerEntry, SmsProvider | EmailProvider | None]:
        """Write ``intent`` to the ledger; return the new row and its provider, or why nothing is sent."""
        provider = self.providers.sms if intent.channel == "sms" else self.providers.email
        status: ledger.Status = "dry_run" if self.dry_run else "pending"
        if not self.dry_run and provider is None:
            return ToolResult(f"no {intent.channel} provider is configured; nothing was sent", is_error=True)

        reservation = await ledger.reserve(self.conn, intent, status=status,
                                           provider=None if provider is None else provider.name)
        if not reservation.reserved:
            return await self._already_written(intent, reservation.entry)
        assert reservation.entry is not None
        return reservation.entry, provider

    async def _deliver(
        self, intent: ledger.Intent, entry: ledger.LedgerEntry, provider: SmsProvider | EmailProvider | None
    ) -> ToolResult:
        if self.dry_run:
            self.state.sent[intent.channel] = entry
            self._log_action("message drafted (dry run)", "message_dry_run", entry)
            return ToolResult(f"dry run: the {intent.channel} to {intent.recipient} was recorded, not sent")
        assert provider is not None
        return await self._call_provider(provider, intent, entry)

    async def _already_written(self, intent: ledger.Intent, entry: ledger.LedgerEntry | None) -> ToolResult:
        if entry is None:
            return ToolResult("the ledger refused the message; nothing was sent", is_error=True)
        if entry.status in ("sent", "dry_run"):
            self.state.sent[intent.channel] = entry
            return ToolResult(f"a {intent.channel} for this step already went to {entry.recipient}; "
                              "it is not sent again")
        if entry.status == "pending" and entry.step_run_id != intent.step_run_id:
            await ledger.mark_unknown(self.conn, entry.id, "an earlier attempt stopped before the provider answered")
        self.state.stop = "unknown"
        self.state.stop_detail = (f"the {intent.channel} to {entry.recipient} from an earlier attempt has an "
                                  "unknown outcome; a person must check it")
        return ToolResult(self.state.stop_detail, is_error=True)

    async def _call_provider(
        self, provider: SmsProvider | EmailProvider, intent: ledger.Intent, entry: ledger.LedgerEntry
    ) -> ToolResult:
        try:
            if intent.channel == "sms":
                delivery = await provider.send_sms(intent.recipient, intent.body)  # type: ignore[union-attr]
            else:
                delivery = await provider.send_email(  # type: ignore[union-attr]
                    intent.recipient, intent.subject or "", intent.body)
        except DeliveryUnknownError as exc:
            await ledger.mark_unknown(self.conn, entry.id, exc.message)
            self.state.sent[intent.channel] = entry
            self.state.stop = "unknown"
            self.state.stop_detail = f"{intent.channel} to {intent.recipient}: {exc.message}; a person must check it"
            return ToolResult("the provider's answer was lost; the message may have been sent and will not be "
                              "sent again", is_error=True)
        except ProviderError as exc:
            return await self._provider_failed(intent, entry, exc)

        await ledger.mark_sent(self.conn, entry.id, delivery.provider_id, self.request.context.now)
        self.state.sent[intent.channel] = entry
        self._log_action("message sent", "message_sent", entry)
        return ToolResult(f"sent the {intent.channel} to {intent.recipient} (id {delivery.provider_id})")

    async def _provider_failed(self, intent: ledger.Intent, entry: ledger.LedgerEntry, exc: ProviderError) -> ToolResult:
        await ledger.mark_failed(self.conn, entry.id, exc.message)
        logger.error(
            "%s to %s failed: %s", intent.channel, intent.recipient, exc.message,
            extra={"event": "message_failed", "channel": intent.channel, "code": exc.code,
                   "instance_id": intent.instance_id, "step_run_id": intent.step_run_id},
        )
        if exc.opted_out:
            await add_suppression(self.conn, intent.channel, intent.recipient, "provider",
                                  f"provider error {exc.code}: {exc.message}")
            self.state.rejections.append(f"{intent.recipient} has opted out")
            return ToolResult(f"not sent: {intent.recipient} has opted out of {intent.channel} messages",
                              is_error=True)
        if exc.transient:
            self.state.stop = "transient"
            self.state.stop_detail = f"{intent.channel} provider: {exc.message}"
            return ToolResult("the provider is unavailable; the step will be retried later", is_error=True)
        self.state.failures.append(f"{intent.channel} provider: {exc.message}")
        return ToolResult(f"the provider rejected the message: {exc.message}", is_error=True)

    def _log_action(self, message: str, event: str, entry: ledger.LedgerEntry) -> None:
        logger.info(
            "%s: %s to %s", message, entry.channel, entry.recipient,
            extra={"event": event, "channel": entry.channel, "ledger_id": entry.id,
                   "instance_id": entry.instance_id, "step_run_id": entry.step_run_id,
                   "rule_id": entry.rule_id},
        )
        logger.debug("message body: %s", entry.body, extra={"event": "message_body", "ledger_id": entry.id})
