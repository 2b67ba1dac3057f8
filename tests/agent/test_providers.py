"""The Twilio and SMTP providers against local servers."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller

from rulesd.agent.providers.smtp import SmtpEmail
from rulesd.agent.providers.twilio import TwilioSms
from rulesd.config import EmailSettings, SmsSettings
from rulesd.errors import ConfigError, ProviderError
from tests.agent.conftest import free_port
from tests.fakes.twilio_server import TwilioServer

pytestmark = pytest.mark.anyio


def twilio_settings(server: TwilioServer, **changes: Any) -> SmsSettings:
    values = {"provider": "twilio", "account_sid": server.state.account_sid, "auth_token": server.state.auth_token,
              "from_number": "+15125550000", "base_url": server.base_url, **changes}
    return SmsSettings(**values)


async def test_twilio_sends_with_messaging_service(twilio_server: TwilioServer) -> None:
    provider = TwilioSms(twilio_settings(twilio_server, from_number=None, messaging_service_sid="MG123"))
    try:
        delivery = await provider.send_sms("+15125550101", "Hello")
    finally:
        await provider.close()

    assert delivery.provider_id == twilio_server.messages[0].sid
    assert delivery.status == "queued"
    assert twilio_server.messages[0].sender == "MG123"


async def test_twilio_wrong_token_is_permanent(twilio_server: TwilioServer) -> None:
    provider = TwilioSms(twilio_settings(twilio_server, auth_token="wrong"))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.send_sms("+15125550101", "Hello")
    finally:
        await provider.close()

    assert caught.value.code == "20003"
    assert caught.value.transient is False
    assert "TWILIO_AUTH_TOKEN" in (caught.value.hint or "")


async def test_twilio_rate_limit_is_transient(twilio_server: TwilioServer) -> None:
    twilio_server.fail_next(429, 20429, "Too Many Requests")
    provider = TwilioSms(twilio_settings(twilio_server))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.send_sms("+15125550101", "Hello")
    finally:
        await provider.close()

    assert caught.value.transient is True
    assert twilio_server.messages == []


async def test_twilio_opt_out_flagged(twilio_server: TwilioServer) -> None:
    twilio_server.opt_out("+15125550101")
    provider = TwilioSms(twilio_settings(twilio_server))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.send_sms("+15125550101", "Hello")
    finally:
        await provider.close()

    assert caught.value.opted_out is True
    assert caught.value.code == "21610"


async def test_twilio_connection_refused_is_transient() -> None:
    settings = SmsSettings(provider="twilio", account_sid="AC1", auth_token="t", from_number="+15125550000",
                           base_url=f"http://127.0.0.1:{free_port()}")
    provider = TwilioSms(settings)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.send_sms("+15125550101", "Hello")
    finally:
        await provider.close()

    assert caught.value.transient is True


def test_twilio_missing_settings() -> None:
    with pytest.raises(ConfigError, match="account_sid, auth_token, from_number or messaging_service_sid"):
        TwilioSms(SmsSettings(provider="twilio"))


class RejectingHandler:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "550 5.1.1 mailbox unavailable"


@pytest.fixture
def rejecting_smtp() -> Iterator[Controller]:
    controller = Controller(RejectingHandler(), hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


async def test_smtp_rejected_recipient_is_permanent(rejecting_smtp: Controller) -> None:
    provider = SmtpEmail(EmailSettings(provider="smtp", host="127.0.0.1", port=rejecting_smtp.port, security="none",
                                       from_address="office@example.com"))

    with pytest.raises(ProviderError) as caught:
        await provider.send_email("pat@example.com", "Hello", "Body")

    assert caught.value.code == "550"
    assert caught.value.transient is False
    assert "mailbox unavailable" in caught.value.message


async def test_smtp_connection_refused_is_transient() -> None:
    provider = SmtpEmail(EmailSettings(provider="smtp", host="127.0.0.1", port=free_port(), security="none",
                                       from_address="office@example.com"))

    with pytest.raises(ProviderError) as caught:
        await provider.send_email("pat@example.com", "Hello", "Body")

    assert caught.value.transient is True


def test_smtp_message_headers() -> None:
    provider = SmtpEmail(EmailSettings(provider="smtp", host="127.0.0.1", from_address="office@example.com",
                                       from_name="Lone Star Air"))

    message = provider.build_message("pat@example.com", "Your estimate", "Hi Pat,\n\nThanks.")

    assert message["From"] == "Lone Star Air <office@example.com>"
    assert message["To"] == "pat@example.com"
    assert message["Subject"] == "Your estimate"
    assert message["Message-ID"].endswith("@example.com>")
    assert message["Date"]
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"


def test_smtp_missing_settings() -> None:
    with pytest.raises(ConfigError, match="email.host, email.from_address"):
        SmtpEmail(EmailSettings(provider="smtp"))
