"""Phone numbers and e-mail addresses in the one form the ledger and suppressions store.

Phone numbers become E.164 with the North American default (10 digits get
``+1``), the same rule as the SQL function ``rulesd_e164``; e-mail
addresses are lower-cased. Comparing normalized forms is how a recipient
the model names is matched against the customer's contacts.
"""

from __future__ import annotations

import re
from typing import Literal

Channel = Literal["sms", "email"]

_NON_DIGITS = re.compile(r"\D")
# A pragmatic shape check: one @, no spaces, a dot in the domain. Deliverability is the server's call.
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def normalize_phone(raw: str | None) -> str | None:
    """Return ``raw`` in E.164 form, or None when it has fewer than 7 digits."""
    digits = _NON_DIGITS.sub("", raw or "")
    if len(digits) < 7:
        return None
    if len(digits) == 10:
        return "+1" + digits
    return "+" + digits


def normalize_email(raw: str | None) -> str | None:
    """Return ``raw`` stripped and lower-cased, or None when it is not an address."""
    text = (raw or "").strip().lower()
    if not _EMAIL.match(text):
        return None
    return text


def normalize_address(channel: Channel, raw: str | None) -> str | None:
    """Normalize ``raw`` as a phone number for ``sms`` or an e-mail address for ``email``."""
    if channel == "sms":
        return normalize_phone(raw)
    return normalize_email(raw)
