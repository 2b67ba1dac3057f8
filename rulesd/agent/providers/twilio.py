"""SMS through Twilio's Messages REST API.

``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``,
form-encoded ``To``, ``From`` or ``MessagingServiceSid``, and ``Body``,
with HTTP basic auth (account SID and auth token). This module is the one
boundary where httpx errors and Twilio error bodies become
``ProviderError``.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from rulesd.agent.providers import Delivery
from rulesd.config import SmsSettings
from rulesd.errors import ConfigError, DeliveryUnknownError, ProviderError

logger = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds per request

# Twilio error codes meaning the recipient does not want texts from this
# sender: 21610 "Attempt to send to unsubscribed recipient" (the customer
# replied STOP); 30004 "Message blocked" is a carrier-side block, left out
# because it is not an opt-out.
OPT_OUT_CODES = frozenset({21610})


class TwilioSms:
    """Send SMS with Twilio; ``name`` is stored in the ledger's provider column."""

    name = "twilio"

    def __init__(self, settings: SmsSettings, *, client: httpx.AsyncClient | None = None) -> None:
        missing = [key for key in ("account_sid", "auth_token") if not getattr(settings, key)]
        if not settings.from_number and not settings.messaging_service_sid:
            missing.append("from_number or messaging_service_sid")
        if missing:
            raise ConfigError(
                f"sms.provider is twilio but {', '.join(missing)} is not set",
                hint="set sms.account_sid (or TWILIO_ACCOUNT_SID), TWILIO_AUTH_TOKEN and sms.from_number",
            )
        self.settings = settings
        self.url = f"{settings.base_url.rstrip('/')}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT)

    async def send_sms(self, to: str, body: str) -> Delivery:
        form = {"To": to, "Body": body}
        if self.settings.messaging_service_sid:
            form["MessagingServiceSid"] = self.settings.messaging_service_sid
        else:
            form["From"] = self.settings.from_number or ""
        auth = (self.settings.account_sid or "", self.settings.auth_token or "")
        try:
            response = await self.client.post(self.url, data=form, auth=auth)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ProviderError(f"cannot connect to Twilio: {exc}", transient=True) from exc
        except httpx.TransportError as exc:
            # The request may have reached Twilio before the connection broke.
            raise DeliveryUnknownError(f"Twilio request cut off: {exc!r}") from exc
        return _delivery(response)

    async def close(self) -> None:
        await self.client.aclose()


def _delivery(response: httpx.Response) -> Delivery:
    payload = _json(response)
    if response.status_code in (200, 201):
        sid = payload.get("sid")
        if not sid:
            raise DeliveryUnknownError(f"Twilio accepted the message but sent no sid (HTTP {response.status_code})")
        return Delivery(provider_id=str(sid), status=str(payload.get("status") or "accepted"))

    code = payload.get("code")
    message = payload.get("message") or response.reason_phrase or "no message"
    text = f"Twilio error {code}: {message} (HTTP {response.status_code})" if code else \
        f"Twilio returned HTTP {response.status_code}: {message}"
    if response.status_code == 401:
        raise ProviderError(text, code=str(code) if code else None,
                            hint="check sms.account_sid and TWILIO_AUTH_TOKEN")
    transient = response.status_code == 429 or response.status_code >= 500
    raise ProviderError(text, code=str(code) if code else None, opted_out=code in OPT_OUT_CODES,
                        transient=transient)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
