"""Message providers: the only code that hands a message to the outside world.

A provider returns a ``Delivery`` or raises one of two errors.
``ProviderError`` means the message was rejected and nothing was
delivered; ``opted_out`` marks a recipient who opted out and
``transient`` a failure that a later attempt may not hit.
``DeliveryUnknownError`` means the call was cut off after the message
was handed over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Delivery:
    """A provider's acceptance of a message: its id (Twilio's SID, the SMTP Message-ID)."""

    provider_id: str | None
    status: str = "accepted"


class SmsProvider(Protocol):
    name: str

    async def send_sms(self, to: str, body: str) -> Delivery:
        """Send ``body`` to the E.164 number ``to``."""
        ...


class EmailProvider(Protocol):
    name: str

    async def send_email(self, to: str, subject: str, body: str) -> Delivery:
        """Send a plain-text e-mail to ``to``."""
        ...
