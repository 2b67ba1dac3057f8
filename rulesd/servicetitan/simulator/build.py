"""Build the JSON record of one simulated entity from its compact state.

Records take the export form (the list form plus ``active``); the server
drops the fields a list schema does not have. Field names, types and
enums follow ServiceTitan's v2 OpenAPI documents.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

import orjson

from rulesd.servicetitan.simulator import vocabulary as vocab
from rulesd.servicetitan.simulator.fastrandom import FastRandom
from rulesd.servicetitan.simulator.state import MICROS

if TYPE_CHECKING:
    from rulesd.servicetitan.simulator.tenant import Simulator

_EPOCH = datetime(1970, 1, 1)  # naive UTC
CENT = Decimal("0.01")
# The server's JSON form: compact separators, ASCII only, as json.dumps writes it.
JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def record_bytes(record: dict[str, Any]) -> bytes:
    """Serialize a record as ``JSON_ENCODER`` does, with orjson's speed where possible.

    orjson writes the same compact bytes for ASCII text but writes other
    characters as UTF-8, where json.dumps writes ``\\u`` escapes, so those
    records go through ``JSON_ENCODER``.
    NOTE: orjson 3.13 writes a float below 1e-4 as ``0.00001`` where json.dumps
    writes ``1e-05``. No built field holds one: coordinates and money are larger.
    """
    blob = orjson.dumps(record)
    if blob.isascii():
        # orjson's bytes keep the capacity of its output buffer, several KiB per
        # record (measured with orjson 3.13), so a cached record is stored as an exact-size copy.
        return bytes(memoryview(blob))
    return JSON_ENCODER.encode(record).encode()


_DAY_MICROS = 86_400 * MICROS
_dates: dict[int, str] = {}  # days since the epoch -> "YYYY-MM-DD"


def _date_text(day: int) -> str:
    text = _dates.get(day)
    if text is None:
        text = _dates[day] = (_EPOCH + timedelta(days=day)).date().isoformat()
    return text


def timestamp(micros: int) -> str:
    """Format epoch microseconds the way ServiceTitan does: 7 fractional digits and ``Z``."""
    day, rest = divmod(micros, _DAY_MICROS)
    seconds, fraction = divmod(rest, MICROS)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_date_text(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction:06d}0Z"


def day_timestamp(micros: int) -> str:
    """Format a date-only value as ServiceTitan does: midnight UTC."""
    return _date_text(micros // _DAY_MICROS) + "T00:00:00Z"


def money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def build_record(sim: Simulator, entity: str, index: int) -> dict[str, Any]:
    record = BUILDERS[entity](sim, index)
    overrides = sim.tables[entity].overrides.get(index)
    if overrides:
        record.update(overrides)
    return record


def _base(sim: Simulator, entity: str, index: int) -> dict[str, Any]:
    table = sim.tables[entity]
    return {
        "id": table.record_id(index),
        "active": bool(table.active[index]),
        "createdOn": timestamp(table.created[index]),
        "modifiedOn": timestamp(table.modified[index]),
    }


def _ref_id(sim: Simulator, entity: str, rng: FastRandom) -> int:
    """Pick an active reference record (business unit, technician...) and return its id."""
    table = sim.tables[entity]
    return table.record_id(rng.randrange(min(4, table.count) if rng.random() < 0.1 else table.count))


def _person(rng: FastRandom) -> tuple[str, str]:
    return rng.choice(vocab.FIRST_NAMES), rng.choice(vocab.LAST_NAMES)


def _city(rng: FastRandom) -> tuple[str, str, str, str, str, float, float]:
    return rng.choice(vocab.CITIES)


def _address(rng: FastRandom) -> dict[str, Any]:
    city, state, zip_prefix, _, _, lat, lon = _city(rng)
    unit = f"Apt {rng.randint(1, 40)}" if rng.random() < 0.12 else None
    return {
        "street": f"{rng.randint(100, 9999)} {rng.choice(vocab.STREET_NAMES)} "
        f"{rng.choice(vocab.STREET_KINDS)}",
        "unit": unit,
        "city": city,
        "state": state,
        "zip": f"{zip_prefix}{rng.randint(0, 99):02d}",
        "country": "USA",
        "latitude": round(lat + rng.uniform(-0.2, 0.2), 6),
        "longitude": round(lon + rng.uniform(-0.2, 0.2), 6),
    }


def _phone(rng: FastRandom, area_code: str | None = None) -> str:
    area = area_code or _city(rng)[3]
    return f"{area}555{rng.randint(100, 199):04d}"


# -- reference data


def _business_unit(sim: Simulator, index: int) -> dict[str, Any]:
    name, trade = vocab.BUSINESS_UNITS[index % len(vocab.BUSINESS_UNITS)]
    rng = sim.rng("business_unit", index)
    return {
        **_base(sim, "business_unit", index),
        "name": name,
        "officialName": f"{name} - Demo Home Services LLC",
        "email": f"{name.lower().replace(' ', '.')}@example.com",
        "currency": "USD",
        "phoneNumber": _phone(rng, "214"),
        "invoiceHeader": None,
        "invoiceMessage": None,
        "defaultTaxRate": 0.0825,
        "address": {
            "street": "100 Commerce St", "unit": None, "city": "Dallas", "state": "TX",
            "zip": "75201", "country": "USA", "latitude": 32.78, "longitude": -96.80,
            "isManualCoordinates": False, "isMilitary": False,
        },
        "trade": {"id": 300 + vocab.BUSINESS_UNITS.index((name, trade)), "name": trade},
        "division": {"id": 401, "name": "Residential" if "Commercial" not in name else "Commercial"},
        "tagTypeIds": [],
        "externalData": [],
    }


def _technician(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("technician", index)
    first, last = _person(rng)
    business_units = sim.tables["business_unit"]
    return {
        **_base(sim, "technician", index),
        "userId": 500_000 + index,
        "name": f"{first} {last}",
        "firstName": first,
        "lastName": last,
        "roleIds": [11],
        "businessUnitId": business_units.record_id(index % business_units.count),
        "mainZoneId": None,
        "zoneIds": [],
        "email": f"{first.lower()}.{last.lower()}.{index}@example.com",
        "phoneNumber": _phone(rng, "214"),
        "mobilePhone": _phone(rng, "972"),
        "loginName": f"{first[0].lower()}{last.lower()}{index}",
        "dailyGoal": float(rng.choice((1500, 2000, 2500, 3000))),
        "isManagedTech": False,
        "licenseType": "NonManagedTech",
        "burdenRate": 0.0,
        "commissionRate": float(rng.choice((0, 2, 5))),
        "hourlyRate": float(rng.randint(24, 48)),
        "soldByRate": 0.0,
        "team": rng.choice(("Red", "Blue", "Green")),
        "status": sim.status_name("technician", index),
        "skills": [],
        "customFields": [],
    }


def _employee(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("employee", index)
    first, last = _person(rng)
    return {
        **_base(sim, "employee", index),
        "userId": 600_000 + index,
        "name": f"{first} {last}",
        "firstName": first,
        "lastName": last,
        "role": vocab.EMPLOYEE_ROLES[index % len(vocab.EMPLOYEE_ROLES)],
        "roleIds": [20 + index % 5],
        "businessUnitId": None,
        "email": f"{first.lower()}.{last.lower()}.{index}@example.com",
        "phoneNumber": _phone(rng, "214"),
        "loginName": f"{first[0].lower()}{last.lower()}{index}",
        "agentId": 100 + index,
        "hourlyRate": float(rng.randint(18, 35)),
        "customFields": [],
    }


def _job_type(sim: Simulator, index: int) -> dict[str, Any]:
    name, priority, duration, job_class = vocab.JOB_TYPES[index % len(vocab.JOB_TYPES)]
    business_units = sim.tables["business_unit"]
    return {
        **_base(sim, "job_type", index),
        "name": name,
        "businessUnitIds": [business_units.record_id(index % business_units.count)],
        "skills": [],
        "tagTypeIds": [],
        "priority": priority,
        "duration": duration,
        "soldThreshold": 1000.0 if job_class == "Sales" else None,
        "class": job_class,
        "summary": f"{name} visit",
        "noCharge": name == "Warranty Callback",
        "invoiceSignaturesRequired": False,
        "externalData": [],
        "isSmartDispatched": False,
        "defaultEstimateSoldAction": "None",
        "customFieldTypeIds": [],
    }


def _campaign(sim: Simulator, index: int) -> dict[str, Any]:
    name, category, medium = vocab.CAMPAIGNS[index % len(vocab.CAMPAIGNS)]
    return {
        **_base(sim, "campaign", index),
        "name": name,
        "isDefaultCampaign": index == 0,
        "category": {"id": 800 + index, "name": category, "active": True},
        "source": name,
        "otherSource": None,
        "businessUnit": None,
        "medium": medium,
        "otherMedium": None,
        "campaignPhoneNumbers": [_phone(sim.rng("campaign", index), "214")],
    }


def _tag_type(sim: Simulator, index: int) -> dict[str, Any]:
    name, color, importance = vocab.TAG_TYPES[index % len(vocab.TAG_TYPES)]
    return {
        **_base(sim, "tag_type", index),
        "name": name,
        "color": color,
        "code": name.upper().replace(" ", "_")[:12],
        "importance": importance,
        "isConversionOpportunity": name in ("VIP", "New Construction"),
        "allowToUseOnTimesheetActivity": False,
        "isVisibleOnDispatchBoard": importance is not None,
    }


# -- customers and locations


def customer_profile(sim: Simulator, index: int) -> tuple[str, str, str, bool]:
    """Return (name, type, time zone, is a company) of a customer."""
    rng = sim.rng("customer", index, salt=3)
    commercial = rng.random() < 0.12
    tz = _city(rng)[4]
    if commercial:
        name = f"{rng.choice(vocab.COMPANY_WORDS)} {rng.choice(vocab.COMPANY_KINDS)}"
        return name, "Commercial", tz, True
    first, last = _person(rng)
    return f"{first} {last}", "Residential", tz, False


def customer_city(sim: Simulator, index: int) -> tuple[str, str, str, str, str, float, float]:
    return _city(sim.rng("customer", index, salt=4))


def _customer(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("customer", index)
    name, kind, _, _ = customer_profile(sim, index)
    address = _address(sim.rng("customer", index, salt=4))
    base = _base(sim, "customer", index)
    merged = None
    if not base["active"]:
        merged = sim.tables["customer"].record_id(max(0, index - 1 - rng.randrange(50)))
    tz = next(c[4] for c in vocab.CITIES if c[0] == address["city"])
    return {
        **base,
        "name": name,
        "type": kind,
        "address": address,
        "customFields": [{"typeId": 9001, "name": "Time Zone", "value": tz}],
        "balance": customer_balance_cents(sim, index) / 100,
        "taxExempt": kind == "Commercial" and rng.random() < 0.2,
        "tagTypeIds": [sim.tables["tag_type"].record_id(0)] if rng.random() < 0.05 else [],
        "doNotMail": rng.random() < 0.05,
        "doNotService": rng.random() < 0.01,
        "nationalAccount": False,
        "createdById": sim.tables["employee"].record_id(rng.randrange(sim.tables["employee"].count)),
        "mergedToId": merged,
        "paymentTermId": None,
        "creditLimit": 5000.0 if kind == "Commercial" else None,
        "creditLimitBalance": None,
        "externalData": [],
    }


def customer_balance(sim: Simulator, index: int) -> Decimal:
    """Sum what the customer owes: the balance of every invoice of their jobs."""
    return Decimal(customer_balance_cents(sim, index)).scaleb(-2)


def customer_balance_cents(sim: Simulator, index: int) -> int:
    total = 0
    jobs = sim.tables["location"].children["job"]
    for location in sim.tables["customer"].children["location"].of(index):
        for job in jobs.of(location):
            total += invoice_cents(sim, job)[3]
    return total


def _contact(sim: Simulator, entity: str, index: int, owner_field: str, owner: str) -> dict[str, Any]:
    table = sim.tables[entity]
    parent = table.parent[index]
    rng = sim.rng(entity, index)
    if owner == "customer":
        customer = parent
    else:
        customer = sim.tables["location"].parent[parent]
    name, _, _, company = customer_profile(sim, customer)
    area = customer_city(sim, customer)[3]
    kind = rng.choice(("MobilePhone", "MobilePhone", "Phone", "Email", "Email"))
    if kind == "Email":
        local = name.lower().replace(" ", ".")
        value = f"{local}.{customer}@example.com"
        phone_number = ""
        do_not_text = False
    else:
        value = _phone(rng, area)
        phone_number = value
        do_not_text = rng.random() < 0.07
    record = {
        **_base(sim, entity, index),
        "type": kind,
        "value": value,
        "memo": "office" if company and rng.random() < 0.3 else None,
        "phoneSettings": {"phoneNumber": phone_number, "doNotText": do_not_text},
        "preferences": {
            "jobRemindersEnabled": rng.random() < 0.9,
            "marketingUpdatesEnabled": rng.random() < 0.55,
            "invoiceStatementNotification": rng.random() < 0.7,
            "invoiceNotification": rng.random() < 0.8,
            "statementNotification": rng.random() < 0.6,
        },
        owner_field: sim.tables[owner].record_id(parent),
    }
    return record


def _customer_contact(sim: Simulator, index: int) -> dict[str, Any]:
    return _contact(sim, "customer_contact", index, "customerId", "customer")


def _location_contact(sim: Simulator, index: int) -> dict[str, Any]:
    return _contact(sim, "location_contact", index, "locationId", "location")


def location_address(sim: Simulator, index: int) -> dict[str, Any]:
    customer = sim.tables["location"].parent[index]
    children = sim.tables["customer"].children["location"]
    first = next(iter(children.of(customer)), index)
    if first == index:
        # A customer's first location is their billing address.
        return _address(sim.rng("customer", customer, salt=4))
    return _address(sim.rng("location", index, salt=4))


def _location(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("location", index)
    customer = sim.tables["location"].parent[index]
    name, _, _, company = customer_profile(sim, customer)
    address = location_address(sim, index)
    base = _base(sim, "location", index)
    return {
        **base,
        "customerId": sim.tables["customer"].record_id(customer),
        "name": f"{name} - {address['street']}" if company else name,
        "address": address,
        "customFields": [],
        "createdById": sim.tables["employee"].record_id(rng.randrange(sim.tables["employee"].count)),
        "mergedToId": None,
        "zoneId": 700 + rng.randrange(6),
        "taxZoneId": None,
        "taxExempt": False,
        "tagTypeIds": [],
        "externalData": [],
    }


# -- work


def job_parts(sim: Simulator, index: int) -> tuple[int, int]:
    """Return the (customer, location) indexes of a job."""
    location = sim.tables["job"].parent[index]
    return sim.tables["location"].parent[location], location


def _job(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("job", index)
    # Values that exist only in some statuses come from their own generator,
    # so a status change does not shift the draws of unrelated fields.
    status_rng = sim.rng("job", index, salt=11)
    customer, location = job_parts(sim, index)
    status = sim.status_name("job", index)
    table = sim.tables["job"]
    appointments = list(sim.tables["job"].children["appointment"].of(index))
    estimates = list(sim.tables["job"].children["estimate"].of(index))
    appointment_table = sim.tables["appointment"]
    job_type = rng.randrange(sim.tables["job_type"].count)
    completed_on = None
    if status == "Completed":
        completed_on = timestamp(table.modified[index] - status_rng.randrange(3600) * MICROS)
    total = invoice_cents(sim, index)[2]
    return {
        **_base(sim, "job", index),
        "jobNumber": str(table.record_id(index) - 60_000_000 + 10_000),
        "projectId": None,
        "customerId": sim.tables["customer"].record_id(customer),
        "locationId": sim.tables["location"].record_id(location),
        "jobStatus": status,
        "completedOn": completed_on,
        "businessUnitId": _ref_id(sim, "business_unit", rng),
        "jobTypeId": sim.tables["job_type"].record_id(job_type),
        "priority": vocab.JOB_TYPES[job_type % len(vocab.JOB_TYPES)][1],
        "campaignId": _ref_id(sim, "campaign", rng),
        "appointmentCount": len(appointments),
        "firstAppointmentId": appointment_table.record_id(appointments[0]) if appointments else 0,
        "lastAppointmentId": appointment_table.record_id(appointments[-1]) if appointments else 0,
        "recallForId": None,
        "warrantyId": None,
        "jobGeneratedLeadSource": None,
        "noCharge": False,
        "notificationsEnabled": True,
        "createdById": _ref_id(sim, "employee", rng),
        "tagTypeIds": [],
        "leadCallId": None,
        "partnerLeadCallId": None,
        "bookingId": None,
        "soldById": _ref_id(sim, "technician", status_rng) if status == "Completed" else None,
        "customerPo": "",
        "invoiceId": sim.tables["invoice"].record_id(index),
        "membershipId": None,
        "total": total / 100 if status == "Completed" else None,
        "createdFromEstimateId": None,
        "estimateIds": [sim.tables["estimate"].record_id(e) for e in estimates],
        "equipmentIds": [],
        "isAutoDispatched": False,
        "summary": rng.choice(vocab.JOB_SUMMARIES),
        "customFields": [],
        "externalData": [],
        "summaryOfWork": None,
    }


def appointment_start(sim: Simulator, index: int) -> int:
    """Return an appointment's start: a business hour one to seven days after its job was booked."""
    job = sim.tables["appointment"].parent[index]
    rng = sim.rng("appointment", index, salt=5)
    created = sim.tables["job"].created[job]
    day = (created // (86_400 * MICROS) + rng.randint(1, 7)) * 86_400 * MICROS
    return day + rng.choice((13, 15, 17, 19, 21)) * 3600 * MICROS


def _appointment(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("appointment", index)
    job = sim.tables["appointment"].parent[index]
    customer, _ = job_parts(sim, job)
    start = appointment_start(sim, index)
    return {
        **_base(sim, "appointment", index),
        "jobId": sim.tables["job"].record_id(job),
        "appointmentNumber": f"{sim.tables['job'].record_id(job) - 60_000_000 + 10_000}-"
        f"{1 + list(sim.tables['job'].children['appointment'].of(job)).index(index)}",
        "start": timestamp(start),
        "end": timestamp(start + 2 * 3600 * MICROS),
        "arrivalWindowStart": timestamp(start),
        "arrivalWindowEnd": timestamp(start + 4 * 3600 * MICROS),
        "status": sim.status_name("appointment", index),
        "specialInstructions": rng.choice(vocab.SPECIAL_INSTRUCTIONS) if rng.random() < 0.2 else None,
        "customerId": sim.tables["customer"].record_id(customer),
        "unused": False,
        "createdById": _ref_id(sim, "employee", rng),
        "isConfirmed": rng.random() < 0.7,
    }


def _appointment_assignment(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("appointment_assignment", index)
    appointment = sim.tables["appointment_assignment"].parent[index]
    job = sim.tables["appointment"].parent[appointment]
    technicians = sim.tables["technician"]
    technician = rng.randrange(technicians.count)
    tech_rng = sim.rng("technician", technician)
    first, last = _person(tech_rng)
    return {
        **_base(sim, "appointment_assignment", index),
        "technicianId": technicians.record_id(technician),
        "technicianName": f"{first} {last}",
        "assignedById": _ref_id(sim, "employee", rng),
        "assignedOn": timestamp(sim.tables["appointment_assignment"].created[index]),
        "status": sim.status_name("appointment_assignment", index),
        "isPaused": False,
        "jobId": sim.tables["job"].record_id(job),
        "appointmentId": sim.tables["appointment"].record_id(appointment),
    }


def _forty_percent(cents: int) -> int:
    """Return 40 % of ``cents``, rounded half to even as ``Decimal.quantize`` does by default."""
    quotient, remainder = divmod(cents * 4, 10)
    if remainder > 5 or (remainder == 5 and quotient % 2):
        quotient += 1
    return quotient


def estimate_items(sim: Simulator, index: int) -> tuple[list[dict[str, Any]], int]:
    """Return the items of an estimate and their subtotal in cents."""
    rng = sim.rng("estimate", index, salt=6)
    created = timestamp(sim.tables["estimate"].created[index])
    items = []
    subtotal = 0
    for position in range(rng.randint(1, 4)):
        sku_index = rng.randrange(len(vocab.SKUS))
        name, kind, rate = vocab.SKUS[sku_index]
        qty = rng.choice((1, 1, 1, 2, 3))
        unit_rate = round(rate * 100)  # cents; every SKU rate has at most two decimals
        total = qty * unit_rate
        subtotal += total
        items.append({
            "id": sim.tables["estimate"].record_id(index) * 10 + position,
            "sku": {
                "id": 40_000 + sku_index,
                "name": name,
                "displayName": name,
                "type": kind,
                "soldHours": 1.0 if kind == "Service" else 0.0,
                "generalLedgerAccountId": 4100,
                "generalLedgerAccountName": "Service Income",
                "modifiedOn": created,
            },
            "skuAccount": "4100",
            "description": f"<p>{name}</p>",
            "membershipTypeId": None,
            "qty": float(qty),
            "unitRate": unit_rate / 100,
            "total": total / 100,
            "unitCost": _forty_percent(unit_rate) / 100,
            "totalCost": _forty_percent(total) / 100,
            "itemGroupName": "",
            "itemGroupRootId": None,
            "createdOn": created,
            "modifiedOn": created,
            "chargeable": True,
            "invoiceItemId": None,
            "budgetCodeId": None,
        })
    return items, subtotal


def _estimate(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("estimate", index)
    status_rng = sim.rng("estimate", index, salt=12)  # for soldBy, as in _job
    table = sim.tables["estimate"]
    job = table.parent[index]
    customer, location = job_parts(sim, job)
    status = sim.status_name("estimate", index)
    items, subtotal = estimate_items(sim, index)
    business_units = sim.tables["business_unit"]
    business_unit = rng.randrange(business_units.count)
    tax = tax_cents(subtotal)
    return {
        **_base(sim, "estimate", index),
        "jobId": sim.tables["job"].record_id(job),
        "projectId": None,
        "locationId": sim.tables["location"].record_id(location),
        "customerId": sim.tables["customer"].record_id(customer),
        "name": items[0]["sku"]["name"] if len(items) == 1 else f"Option {1 + index % 3}",
        "jobNumber": str(sim.tables["job"].record_id(job) - 60_000_000 + 10_000),
        "status": {"value": ESTIMATE_STATUS_VALUES[status], "name": status},
        "reviewStatus": "None",
        "summary": None,
        "soldOn": timestamp(table.modified[index]) if status == "Sold" else None,
        "soldBy": _ref_id(sim, "technician", status_rng) if status == "Sold" else None,
        "items": items,
        "externalLinks": [],
        "subtotal": subtotal / 100,
        "tax": tax / 100,
        "businessUnitId": business_units.record_id(business_unit),
        "businessUnitName": vocab.BUSINESS_UNITS[business_unit % len(vocab.BUSINESS_UNITS)][0],
        "isRecommended": rng.random() < 0.3,
        "budgetCodeId": None,
        "isChangeOrder": False,
        "proposalTagName": None,
        "depositAmount": None,
        "depositPercent": None,
        "requireDepositOnSignature": False,
    }


# NOTE: ServiceTitan does not document the numeric status values; these are a guess.
ESTIMATE_STATUS_VALUES = {"Open": 0, "Sold": 1, "Dismissed": 2}


# -- money


def cents_text(cents: int) -> str:
    """Format whole cents as ServiceTitan's money strings: ``"389.37"``, ``"-0.05"``."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def tax_cents(cents: int) -> int:
    """Return 8.25 % of ``cents``, rounded half to even as ``Decimal.quantize`` does by default."""
    quotient, remainder = divmod(cents * 825, 10_000)
    if remainder * 2 > 10_000 or (remainder * 2 == 10_000 and quotient % 2):
        quotient += 1
    return quotient


def _to_cents(value: Any) -> int:
    return int(Decimal(str(value)).quantize(CENT) * 100)


def invoice_cents(sim: Simulator, index: int) -> tuple[int, int, int, int]:
    """Return (subtotal, tax, total, balance) of invoice ``index`` in cents.

    Invoice ``index`` is the invoice of job ``index``. Whole cents keep the
    arithmetic exact without the cost of ``Decimal``.
    """
    overrides = sim.tables["invoice"].overrides.get(index)
    if overrides and "total" in overrides:
        total = _to_cents(overrides["total"])
        sub_total = _to_cents(overrides["subTotal"])
        tax = _to_cents(overrides["salesTax"])
    elif sim.status_name("job", index) != "Completed":
        return 0, 0, 0, 0
    else:
        sub_total = _generated_subtotal_cents(sim, index)
        tax = tax_cents(sub_total)
        total = sub_total + tax
    paid = 0
    for payment in sim.tables["invoice"].children["payment"].of(index):
        paid += payment_cents(sim, payment)
    return sub_total, tax, total, max(0, total - paid)


def invoice_amounts(sim: Simulator, index: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """Return (subtotal, tax, total, balance) of invoice ``index`` (the invoice of job ``index``)."""
    return tuple(Decimal(cents).scaleb(-2) for cents in invoice_cents(sim, index))  # type: ignore[return-value]


def _generated_subtotal_cents(sim: Simulator, invoice: int) -> int:
    rng = sim.rng("invoice", invoice, salt=7)
    dollars = rng.choice((89, 149, 245, 389, 520, 875, 1650, 3400, 8950))
    return dollars * 100 + rng.randrange(100)


def payment_cents(sim: Simulator, index: int) -> int:
    overrides = sim.tables["payment"].overrides.get(index)
    if overrides and "total" in overrides:
        return _to_cents(overrides["total"])
    sub_total = _generated_subtotal_cents(sim, sim.tables["payment"].parent[index])
    return sub_total + tax_cents(sub_total)


def payment_total(sim: Simulator, index: int) -> str:
    overrides = sim.tables["payment"].overrides.get(index)
    if overrides and "total" in overrides:
        return str(overrides["total"])
    return cents_text(payment_cents(sim, index))


def _invoice(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("invoice", index)
    table = sim.tables["invoice"]
    customer, location = job_parts(sim, index)
    sub_total, tax, total, balance = invoice_cents(sim, index)
    customer_name = customer_profile(sim, customer)[0]
    business_units = sim.tables["business_unit"]
    business_unit = rng.randrange(business_units.count)
    created = table.created[index]
    payments = list(table.children["payment"].of(index))
    paid_on = None
    if payments and balance == 0:
        paid_on = timestamp(sim.tables["payment"].created[payments[-1]])
    address = location_address(sim, location)
    short_address = {key: address[key] for key in ("street", "unit", "city", "state", "zip", "country")}
    job_number = str(sim.tables["job"].record_id(index) - 60_000_000 + 10_000)
    return {
        **_base(sim, "invoice", index),
        "syncStatus": "Posted" if paid_on else "Pending",
        "budgetCodeId": None,
        "referenceNumber": job_number,
        "invoiceDate": day_timestamp(created),
        "dueDate": day_timestamp(created + 30 * 86_400 * MICROS),
        "subTotal": cents_text(sub_total),
        "salesTax": cents_text(tax),
        "salesTaxCode": {"id": 90, "name": "TX Sales Tax", "taxRate": 0.0825},
        "taxZoneId": None,
        "total": cents_text(total),
        "balance": cents_text(balance),
        "invoiceType": None,
        "customer": {"id": sim.tables["customer"].record_id(customer), "name": customer_name},
        "customerAddress": short_address,
        "location": {"id": sim.tables["location"].record_id(location), "name": customer_name},
        "locationAddress": short_address,
        "businessUnit": {
            "id": business_units.record_id(business_unit),
            "name": vocab.BUSINESS_UNITS[business_unit % len(vocab.BUSINESS_UNITS)][0],
        },
        "termName": "Due Upon Receipt",
        "createdBy": "system",
        "batch": None,
        "depositedOn": None,
        "adjustmentToId": None,
        "job": {"id": sim.tables["job"].record_id(index), "number": job_number, "type": None},
        "projectId": None,
        "royalty": None,
        "employeeInfo": None,
        "commissionEligibilityDate": None,
        "sentStatus": "Sent" if total else "NotSent",
        "reviewStatus": "Reviewed" if paid_on else "NeedsReview",
        "assignedTo": None,
        "summary": None,
        "items": [],
        "customFields": [],
        "discountTotal": "0.00",
        "importId": None,
        "exportId": None,
        "materialSkuId": None,
        "membershipId": None,
        "paidOn": paid_on,
        "invoiceConfiguration": "JobInvoice",
    }


def _payment(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("payment", index)
    table = sim.tables["payment"]
    invoice = table.parent[index]
    customer, _ = job_parts(sim, invoice)
    kind, type_id = rng.choice(vocab.PAYMENT_TYPES)
    total = payment_total(sim, index)
    paid = table.created[index]
    business_units = sim.tables["business_unit"]
    business_unit = rng.randrange(business_units.count)
    return {
        **_base(sim, "payment", index),
        "appliedTo": [{
            "appliedId": table.record_id(index) * 10,
            "appliedTo": sim.tables["invoice"].record_id(invoice),
            "appliedAmount": total,
            "appliedBy": "system",
            "appliedOn": timestamp(paid),
            "appliedToReferenceNumber": str(sim.tables["job"].record_id(invoice) - 60_000_000 + 10_000),
        }],
        "authCode": f"{rng.randrange(10**6):06d}" if kind == "Credit Card" else None,
        "batch": None,
        "businessUnit": {
            "id": business_units.record_id(business_unit),
            "name": vocab.BUSINESS_UNITS[business_unit % len(vocab.BUSINESS_UNITS)][0],
        },
        "checkNumber": str(rng.randint(1000, 9999)) if kind == "Check" else None,
        "createdBy": "system",
        "customer": {
            "id": sim.tables["customer"].record_id(customer),
            "name": customer_profile(sim, customer)[0],
        },
        "customFields": [],
        "date": timestamp(paid),
        "deposit": None,
        "generalLedgerAccount": None,
        "memo": None,
        "referenceNumber": str(table.record_id(index) - 110_000_000),
        "refundedPaymentId": None,
        "syncStatus": "Posted",
        "total": total,
        "type": kind,
        "typeId": type_id,
        "unappliedAmount": "0.00",
    }


def _membership(sim: Simulator, index: int) -> dict[str, Any]:
    rng = sim.rng("membership", index)
    table = sim.tables["membership"]
    customer = table.parent[index]
    type_id, _, frequency, price = rng.choice(vocab.MEMBERSHIP_TYPES)
    status = sim.status_name("membership", index)
    created = table.created[index]
    year = 365 * 86_400 * MICROS
    locations = list(sim.tables["customer"].children["location"].of(customer))
    return {
        **_base(sim, "membership", index),
        "createdById": _ref_id(sim, "employee", rng),
        "followUpOn": timestamp(created + year - 30 * 86_400 * MICROS),
        "cancellationDate": timestamp(table.modified[index]) if status == "Canceled" else None,
        "from": day_timestamp(created),
        "nextScheduledBillDate": day_timestamp(created + 30 * 86_400 * MICROS)
        if status == "Active" else None,
        "to": day_timestamp(created + year),
        "billingFrequency": frequency,
        "renewalBillingFrequency": frequency,
        "status": status,
        "followUpStatus": "NotAttempted",
        "initialDeferredRevenue": price,
        "duration": 12,
        "renewalDuration": 12,
        "businessUnitId": sim.tables["business_unit"].record_id(6 % sim.tables["business_unit"].count),
        "customerId": sim.tables["customer"].record_id(customer),
        "membershipTypeId": type_id,
        "locationId": sim.tables["location"].record_id(locations[0]) if locations else None,
        "soldById": _ref_id(sim, "technician", rng),
        "customerPo": None,
        "importId": None,
        "memo": None,
        "customFields": [],
    }


BUILDERS: dict[str, Callable[[Simulator, int], dict[str, Any]]] = {
    "business_unit": _business_unit,
    "technician": _technician,
    "employee": _employee,
    "job_type": _job_type,
    "campaign": _campaign,
    "tag_type": _tag_type,
    "customer": _customer,
    "customer_contact": _customer_contact,
    "location": _location,
    "location_contact": _location_contact,
    "job": _job,
    "appointment": _appointment,
    "appointment_assignment": _appointment_assignment,
    "estimate": _estimate,
    "invoice": _invoice,
    "payment": _payment,
    "membership": _membership,
}

# Fields of the export form that a list schema does not have
# (additionalProperties is false there). The list endpoints remove them from
# cached JSON and handle only "active", the key right after "id".
LIST_EXCLUDED: dict[str, frozenset[str]] = {
    "customer_contact": frozenset({"active"}),
    "location_contact": frozenset({"active"}),
    "job": frozenset({"active"}),
}
