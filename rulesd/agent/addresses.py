"""Phone numbers and e-mail addresses in the one form the ledger and suppressions store.

Phone numbers become E.164 with the North American default (10 digits get
``+1``), and e-mail addresses are lower-cased. Comparing normalized forms is
how a recipient the model names is matched against the customer's contacts.

NOTE: the SQL function ``rulesd_e164`` (migration 0031) still accepts the
ambiguous numbers that ``normalize_phone`` rejects, so a ``servicetitan``
suppression may be stored under a different form. The recipient guard
checks each contact's ``doNotText`` flag itself, so this does not let a
text through.
"""

from __future__ import annotations

import re
from typing import Literal

Channel = Literal["sms", "email"]

E164_MAX_DIGITS = 15  # the ITU-T E.164 limit, country code included
_NON_DIGITS = re.compile(r"\D", re.ASCII)
# Digits and the punctuation people write between them; anything else (an extension such as
# "x12" or "ext. 3", letters, a second number) makes the text ambiguous as one phone number.
_PHONE_TEXT = re.compile(r"^\s*\+?[\d\s().\-/]*\s*$", re.ASCII)
# A pragmatic shape check: one @, no spaces, a dot in the domain. Deliverability is the server's call.
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def normalize_phone(raw: str | None) -> str | None:
    """Return ``raw`` in E.164 form, or None when it is not one unambiguous phone number.

    None means fewer than 7 or more than 15 digits, or characters other
    than digits and the usual punctuation (an extension, letters, two
    numbers). A leading ``+`` with exactly 10 digits is None as well. It is
    either a 10-digit international number such as New Zealand's
    +64 9 123 4567 or a North American number missing its 1, and a wrong
    guess would text a stranger.
    """
    text = raw or ""
    if not _PHONE_TEXT.match(text):
        return None
    digits = _NON_DIGITS.sub("", text)
    if len(digits) < 7 or len(digits) > E164_MAX_DIGITS:
        return None
    if len(digits) == 10:
        if text.strip().startswith("+"):
            return None
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
