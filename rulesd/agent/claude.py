"""Calls to the Anthropic Messages API through the official async SDK, with retries.

This module is the one boundary where ``anthropic`` errors become rulesd
errors. The SDK's own retries are off so that backoff, its log lines and
the final outcome are decided here. 408, 429, 5xx (529 "overloaded"
included), timeouts and connection errors are retried with exponential
backoff and jitter, honouring a ``retry-after`` header of up to a minute.
When the retries run out they raise ``TransientAgentError``. Any other
error raises ``AgentError`` with the API's own message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Awaitable, Callable

import anthropic
from anthropic.types import Message

from rulesd.config import AgentSettings
from rulesd.errors import AgentError, ConfigError, TransientAgentError

logger = logging.getLogger(__name__)

BACKOFF_BASE = 1.0  # seconds before the first retry
BACKOFF_MAX = 30.0  # seconds
RETRY_AFTER_MAX = 60.0  # seconds; a longer retry-after ends the attempt as transient
RETRYABLE_STATUS = frozenset({408, 409, 429})

Sleep = Callable[[float], Awaitable[None]]


class ModelClient:
    """Send Messages API requests; retry what is worth retrying."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        sleep: Sleep = asyncio.sleep,
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self.client = client or make_sdk_client(settings)

    async def create(self, params: dict[str, Any]) -> Message:
        """Call ``messages.create`` with ``params``; raise ``TransientAgentError`` or ``AgentError``."""
        attempts = max(self.settings.max_retries, 0) + 1
        for attempt in range(1, attempts + 1):
            try:
                message = await self.client.messages.create(**params)
            except anthropic.APIStatusError as exc:
                if not _retryable(exc.status_code):
                    raise AgentError(f"Anthropic API error {exc.status_code}: {_api_message(exc)}") from exc
                failure: Exception = exc
                reason = f"HTTP {exc.status_code}: {_api_message(exc)}"
            except anthropic.APITimeoutError as exc:
                failure, reason = exc, "timed out"
            except anthropic.APIConnectionError as exc:
                failure, reason = exc, f"connection failed: {exc}"
            except UnicodeEncodeError as exc:
                raise AgentError(f"the request to the Anthropic API could not be encoded: {exc}") from exc
            except (ValueError, anthropic.APIResponseValidationError) as exc:
                # A 200 body that is cut off or not JSON at all, as a proxy in the way may send.
                failure, reason = exc, f"invalid response body: {type(exc).__name__}: {exc}"
            else:
                problem = _malformed(message)
                if problem is None:
                    return message
                failure, reason = TransientAgentError(problem), problem

            if attempt == attempts:
                raise TransientAgentError(
                    f"Anthropic API call failed after {attempts} attempts: {reason}"
                ) from failure
            delay = _retry_delay(attempt, failure)
            if delay is None:
                raise TransientAgentError(f"Anthropic API asked to wait too long: {reason}") from failure
            logger.warning(
                "Anthropic API call failed (%s); retry %d of %d in %.1f s", reason, attempt, attempts - 1, delay,
                extra={"event": "model_retry", "attempt": attempt, "delay": delay},
            )
            await self.sleep(delay)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.client.close()


def make_sdk_client(settings: AgentSettings) -> anthropic.AsyncAnthropic:
    """Build the SDK client; the SDK itself also reads ANTHROPIC_BASE_URL when base_url is unset."""
    if not settings.api_key:
        raise ConfigError(
            "the Anthropic API key is missing",
            hint="set ANTHROPIC_API_KEY, or run with --dry-run and no agent steps",
        )
    return anthropic.AsyncAnthropic(
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.timeout.total_seconds(),
        max_retries=0,
    )


def _malformed(message: Any) -> str | None:
    """Return what is wrong with a 200 response that the SDK did not parse into a usable message."""
    # With a non-JSON content type the SDK (2.17.0) returns the body as a str, and a JSON object of the
    # wrong shape becomes a Message whose fields are None.
    if not isinstance(message, Message):
        return f"invalid response body: expected a message, got {type(message).__name__}"
    if not isinstance(message.content, list) or message.usage is None or not isinstance(message.model, str):
        return "invalid response body: the message lacks content, usage or model"
    return None


def _retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"{error.get('type', 'error')}: {error['message']}"
    return exc.message


def _retry_delay(attempt: int, failure: Exception) -> float | None:
    """Return seconds to wait before retry ``attempt`` (1-based), or None when ``retry-after`` exceeds ``RETRY_AFTER_MAX``."""
    response = getattr(failure, "response", None)
    if response is not None:
        header = response.headers.get("retry-after")
        if header is not None:
            try:
                seconds = float(header)
            except ValueError:
                seconds = -1.0
            if seconds > RETRY_AFTER_MAX:
                return None
            if seconds >= 0:
                return seconds
    backoff = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
    return backoff * random.uniform(0.75, 1.25)
