"""Recipients: only a contact of the enrolled customer or location may be messaged.

Contacts come from the mirror tables ``st_customer_contacts`` and
``st_location_contacts``. A ``to`` the model gives is matched against them
by normalized number or address; anything else is refused. With no ``to``
the preferred contact is used: for SMS the first mobile number without
``doNotText``, for e-mail the first address whose preferences allow it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from rulesd.agent.addresses import Channel, normalize_address, normalize_email, normalize_phone
from rulesd.agent.timezones import timezone_for_state

logger = logging.getLogger(__name__)

PHONE_TYPES = ("MobilePhone", "Phone")
# A rejected `to` is stored and logged cut to this many characters: the model may put anything
# there, a message body included, and bodies are logged at DEBUG only.
ADDRESS_DISPLAY_MAX = 40

_CONTACTS = """
SELECT 'customer' AS owner, id, type, value, phone_number, do_not_text,
       job_reminders_enabled, marketing_updates_enabled
FROM st_customer_contacts
WHERE customer_id = %(customer_id)s AND active IS NOT FALSE AND missing_since IS NULL
UNION ALL
SELECT 'location' AS owner, id, type, value, phone_number, do_not_text,
       job_reminders_enabled, marketing_updates_enabled
FROM st_location_contacts
WHERE location_id = %(location_id)s AND active IS NOT FALSE AND missing_since IS NULL
ORDER BY owner, id
"""


@dataclass(frozen=True)
class Contact:
    """One contact row; ``address`` is the normalized number or e-mail address."""

    owner: str  # customer or location
    id: int
    type: str
    value: str
    address: str | None
    do_not_text: bool
    job_reminders_enabled: bool | None
    marketing_updates_enabled: bool | None

    @property
    def channel(self) -> Channel | None:
        if self.type in PHONE_TYPES:
            return "sms"
        if self.type == "Email":
            return "email"
        return None


@dataclass(frozen=True)
class Resolution:
    """A contact to message, or the reason none may be."""

    contact: Contact | None
    refusal: str = ""


async def load_contacts(
    conn: psycopg.AsyncConnection, customer_id: int | None, location_id: int | None
) -> list[Contact]:
    """Return the active contacts of the customer, then of the location."""
    if customer_id is None and location_id is None:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CONTACTS, {"customer_id": customer_id, "location_id": location_id})
        rows = await cur.fetchall()
    return [_contact(row) for row in rows]


def _contact(row: dict[str, Any]) -> Contact:
    kind = row["type"] or ""
    address = None
    if kind in PHONE_TYPES:
        address = normalize_phone(row["phone_number"] or row["value"])
    elif kind == "Email":
        address = normalize_email(row["value"])
    return Contact(
        owner=row["owner"],
        id=row["id"],
        type=kind,
        value=row["value"] or "",
        address=address,
        do_not_text=bool(row["do_not_text"]),
        job_reminders_enabled=row["job_reminders_enabled"],
        marketing_updates_enabled=row["marketing_updates_enabled"],
    )


def email_allowed(contact: Contact) -> bool:
    """Return False when the customer turned off job reminders or marketing e-mail.

    ServiceTitan has no single "do not e-mail" flag; the agent's messages
    are follow-ups and reminders, so either preference set to false stops them.
    """
    return contact.job_reminders_enabled is not False and contact.marketing_updates_enabled is not False


def resolve(contacts: list[Contact], channel: Channel, to: str | None) -> Resolution:
    """Pick the contact to message on ``channel``: the one matching ``to``, or the preferred one."""
    usable = [c for c in contacts if c.channel == channel and c.address]
    if to is None or not to.strip():
        return _preferred(usable, channel)

    wanted = normalize_address(channel, to)
    kind = "phone number" if channel == "sms" else "e-mail address"
    if wanted is None:
        return Resolution(None, f"{shorten(to)!r} is not a valid {kind}")
    matches = [c for c in usable if c.address == wanted]
    if not matches:
        return Resolution(None, f"{wanted} is not a {kind} of this customer or location; "
                          "messages may only go to the customer's own contacts")
    # One contact row that opts out is enough, even when another row lists the same address
    # without the flag: the person behind the address asked once.
    if channel == "sms" and any(c.do_not_text for c in matches):
        return Resolution(None, f"{wanted} is marked do-not-text in ServiceTitan")
    if channel == "email" and not all(email_allowed(c) for c in matches):
        return Resolution(None, f"{wanted} has e-mail preferences turned off in ServiceTitan")
    return Resolution(matches[0])


def shorten(text: str, limit: int = ADDRESS_DISPLAY_MAX) -> str:
    """Return ``text`` cut to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _preferred(usable: list[Contact], channel: Channel) -> Resolution:
    if channel == "sms":
        opted_out = {c.address for c in usable if c.do_not_text}
        mobiles = [c for c in usable if c.type == "MobilePhone" and c.address not in opted_out]
        if mobiles:
            return Resolution(mobiles[0])
        return Resolution(None, "the customer has no mobile number that allows texts")
    opted_out = {c.address for c in usable if not email_allowed(c)}
    emails = [c for c in usable if c.address not in opted_out]
    if emails:
        return Resolution(emails[0])
    return Resolution(None, "the customer has no e-mail address whose preferences allow messages")


async def load_recipient_zone(
    conn: psycopg.AsyncConnection, customer_id: int | None, location_id: int | None, fallback: str
) -> ZoneInfo:
    """Return the time zone of the service location's state, else the customer's, else ``fallback``."""
    state = None
    async with conn.cursor() as cur:
        if location_id is not None:
            await cur.execute("SELECT address_state FROM st_locations WHERE id = %s", (location_id,))
            row = await cur.fetchone()
            state = row[0] if row else None
        if not state and customer_id is not None:
            await cur.execute("SELECT address_state FROM st_customers WHERE id = %s", (customer_id,))
            row = await cur.fetchone()
            state = row[0] if row else None
    return timezone_for_state(state, fallback)
