"""The rulesd exception tree.

Every error rulesd raises on purpose derives from ``RulesdError``. Errors of
dependencies (psycopg, httpx, anthropic, lark, jsonschema, YAML) are
translated into this tree at one boundary per dependency and chained with
``from exc``. The CLI maps the tree to exit codes in one place.

    RulesdError
    ├── ConfigError            invalid rulesd.yaml or environment
    ├── DatabaseError          cannot connect, query failed
    │   └── MigrationError     a migration file is missing, changed or failed
    ├── ServiceTitanError      the ServiceTitan API returned an error
    │   ├── AuthenticationError   credentials rejected
    │   └── TransientAPIError     retries exhausted on 429, 5xx or a bad body
    ├── SyncError              an entity sync failed
    ├── RuleError              rule files failed to load
    ├── EngineError            the workflow engine hit an unrecoverable state
    └── AgentError             the model or a message provider failed
        ├── TransientAgentError   worth retrying later (429, 529, 5xx, timeout)
        └── ProviderError         SMS or e-mail delivery failed
            └── DeliveryUnknownError  cut off after sending: may have been delivered
"""

from __future__ import annotations


class RulesdError(Exception):
    """Base class of every error rulesd raises on purpose.

    ``hint`` is one sentence telling the user what to do next; the CLI
    prints it after the message.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(RulesdError):
    """Raised when the configuration file or an environment variable is invalid."""

    exit_code = 2


class DatabaseError(RulesdError):
    """Raised when the database cannot be reached or a query fails."""

    exit_code = 3


class MigrationError(DatabaseError):
    """Raised when a migration is missing, was changed after it was applied, or fails."""


class ServiceTitanError(RulesdError):
    """Raised when the ServiceTitan API returns an error.

    Carries the HTTP status, the endpoint path (never the query string's
    secrets, never a token), ServiceTitan's ``traceId`` and ``title``.
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str | None = None,
        trace_id: str | None = None,
        title: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.endpoint = endpoint
        self.trace_id = trace_id
        self.title = title


class AuthenticationError(ServiceTitanError):
    """Raised when ServiceTitan rejects the client credentials or the app key."""


class TransientAPIError(ServiceTitanError):
    """Raised when retries are exhausted on a 429, a 5xx, a timeout or a bad body."""


class SyncError(RulesdError):
    """Raised when one or more entities failed to sync."""

    exit_code = 5


class RuleError(RulesdError):
    """Raised when rule files fail to load; the diagnostics are on ``errors``."""

    exit_code = 1


class EngineError(RulesdError):
    """Raised when the workflow engine reaches a state it cannot recover from."""

    exit_code = 6


class AgentError(RulesdError):
    """Raised when the model or a message provider fails permanently."""

    exit_code = 7


class TransientAgentError(AgentError):
    """Raised for failures worth retrying later: 429, 529, 5xx and timeouts."""


class ProviderError(AgentError):
    """Raised when an SMS or e-mail provider rejects or fails a message."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        opted_out: bool = False,
        transient: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.opted_out = opted_out
        self.transient = transient


class DeliveryUnknownError(ProviderError):
    """Raised when a provider call was cut off after the message was handed over.

    The message may or may not have been delivered, so it must not be sent again.
    """
