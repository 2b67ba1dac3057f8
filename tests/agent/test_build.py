"""``build_executor``: dry-run decisions and configuration errors."""

from __future__ import annotations

import logging

import pytest

from rulesd.agent import ClaudeExecutor, build_executor
from rulesd.config import AgentSettings, MessagingSettings, Settings, SmsSettings
from rulesd.errors import ConfigError

pytestmark = pytest.mark.anyio

AGENT = AgentSettings(api_key="test-key", base_url="http://127.0.0.1:9")
TWILIO = SmsSettings(provider="twilio", account_sid="AC1", auth_token="token", from_number="+15125550000")


async def build(settings: Settings, *, dry_run: bool = False) -> ClaudeExecutor:
    executor = build_executor(settings, "postgresql://127.0.0.1/unused", dry_run=dry_run)
    assert isinstance(executor, ClaudeExecutor)
    await executor.aclose()
    return executor


async def test_build_without_provider_is_dry_run(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rulesd.agent"):
        executor = await build(Settings(agent=AGENT))

    assert executor.dry_run is True
    assert "no SMS or e-mail provider is configured" in caplog.text


async def test_build_with_provider_sends() -> None:
    executor = await build(Settings(agent=AGENT, sms=TWILIO))

    assert executor.dry_run is False


async def test_build_dry_run_flag_wins() -> None:
    executor = await build(Settings(agent=AGENT, sms=TWILIO), dry_run=True)

    assert executor.dry_run is True


async def test_build_config_dry_run_wins() -> None:
    executor = await build(Settings(agent=AGENT, sms=TWILIO, messaging=MessagingSettings(dry_run=True)))

    assert executor.dry_run is True


def test_build_missing_api_key() -> None:
    with pytest.raises(ConfigError, match="Anthropic API key is missing"):
        build_executor(Settings(sms=TWILIO), "postgresql://127.0.0.1/unused", dry_run=False)


def test_build_invalid_quiet_hours() -> None:
    with pytest.raises(ConfigError, match="quiet_hours"):
        build_executor(Settings(agent=AGENT, messaging=MessagingSettings(quiet_hours="late")),
                       "postgresql://127.0.0.1/unused", dry_run=False)
