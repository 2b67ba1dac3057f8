"""The agent: Claude carries out steps through guarded messaging tools.

``build_executor`` is what the daemon calls: it reads the settings, picks
the providers, decides whether this is a dry run, and returns the
executor.
"""

from __future__ import annotations

import logging

from rulesd.agent.claude import ModelClient
from rulesd.agent.executor import ClaudeExecutor
from rulesd.agent.providers.smtp import SmtpEmail
from rulesd.agent.quiet_hours import parse_quiet_hours
from rulesd.agent.providers.twilio import TwilioSms
from rulesd.agent.tools import Providers
from rulesd.config import Settings
from rulesd.engine.executor import StepExecutor

logger = logging.getLogger(__name__)

__all__ = ["ClaudeExecutor", "build_executor", "build_providers"]


def build_providers(settings: Settings) -> Providers:
    """Return the configured SMS and e-mail providers; either may be None."""
    sms = TwilioSms(settings.sms) if settings.sms.provider == "twilio" else None
    email = SmtpEmail(settings.email) if settings.email.provider == "smtp" else None
    return Providers(sms=sms, email=email)


def build_executor(settings: Settings, database_url: str, *, dry_run: bool) -> StepExecutor:
    """Build the Claude executor.

    The run is a dry run when ``dry_run`` is set, when ``messaging.dry_run``
    is true, or when ``messaging.dry_run`` is unset and no provider is
    configured; the last case is logged as a WARNING at start because no message goes out.
    """
    # Settings errors are raised before any HTTP client is opened.
    parse_quiet_hours(settings.messaging.quiet_hours)
    model = ModelClient(settings.agent)
    providers = build_providers(settings)
    configured = settings.messaging.dry_run
    if dry_run or configured:
        effective = True
        logger.info("dry run: messages are drafted and recorded, none is sent",
                    extra={"event": "agent_dry_run", "reason": "requested"})
    elif configured is None and providers.sms is None and providers.email is None:
        effective = True
        logger.warning(
            "dry run: no SMS or e-mail provider is configured, so messages are drafted and recorded, none "
            "is sent; set sms.provider or email.provider to send",
            extra={"event": "agent_dry_run", "reason": "no_provider"},
        )
    else:
        effective = False
    return ClaudeExecutor(settings, database_url, dry_run=effective, model=model, providers=providers)
