"""Named changes to the simulated tenant, as a dispatcher or technician would make them.

Every change moves ``modifiedOn`` of each record it alters, so list
filters and export feeds pick it up. Each returns the main record in its
export form. The caller (``Simulator.apply``) holds the tenant lock.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

from rulesd.servicetitan.simulator.build import CENT, money

if TYPE_CHECKING:
    from rulesd.servicetitan.simulator.tenant import Simulator

Change = Callable[..., dict[str, Any]]


def _touch(sim: Simulator, entity: str, index: int, when: int) -> None:
    sim.tables[entity].touch(index, when)


def _new(sim: Simulator, entity: str, parent: int, when: int, parent_entity: str | None) -> int:
    table = sim.tables[entity]
    index = table.append(parent=parent, created=when)
    table.touch(index, when)
    if parent_entity is not None:
        sim.tables[parent_entity].children[entity].add(parent, index)
    return index


def _expect_status(sim: Simulator, entity: str, index: int, allowed: tuple[str, ...]) -> None:
    status = sim.status_name(entity, index)
    if status not in allowed:
        record_id = sim.tables[entity].record_id(index)
        raise ValueError(
            f"{entity} {record_id} is {status}; this change needs one of: {', '.join(allowed)}"
        )


# -- estimates


def sell_estimate(sim: Simulator, *, id: int) -> dict[str, Any]:
    index = sim.index_of("estimate", id)
    _expect_status(sim, "estimate", index, ("Open",))
    sim.set_status("estimate", index, "Sold")
    _touch(sim, "estimate", index, sim.now())
    return sim.record("estimate", index)


def dismiss_estimate(sim: Simulator, *, id: int) -> dict[str, Any]:
    index = sim.index_of("estimate", id)
    _expect_status(sim, "estimate", index, ("Open",))
    sim.set_status("estimate", index, "Dismissed")
    _touch(sim, "estimate", index, sim.now())
    return sim.record("estimate", index)


def create_estimate(
    sim: Simulator,
    *,
    job_id: int | None = None,
    customer_id: int | None = None,
    subtotal: float | str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Add an Open estimate to a job: ``job_id``, else the newest job of ``customer_id``."""
    if job_id is not None:
        job = sim.index_of("job", job_id)
    elif customer_id is not None:
        job = _latest_job(sim, sim.index_of("customer", customer_id))
    else:
        raise ValueError("create_estimate needs job_id or customer_id")
    when = sim.now()
    index = _new(sim, "estimate", job, when, "job")
    sim.set_status("estimate", index, "Open")
    _touch(sim, "job", job, when)
    values: dict[str, Any] = {}
    if subtotal is not None:
        amount = Decimal(str(subtotal)).quantize(CENT)
        values["subtotal"] = float(amount)
        values["tax"] = float((amount * Decimal("0.0825")).quantize(CENT))
        values["items"] = []
    if name is not None:
        values["name"] = name
    if values:
        sim.tables["estimate"].override(index, **values)
    return sim.record("estimate", index)


def _latest_job(sim: Simulator, customer: int) -> int:
    jobs = [
        job
        for location in sim.tables["customer"].children["location"].of(customer)
        for job in sim.tables["location"].children["job"].of(location)
    ]
    if jobs:
        return max(jobs)
    created = create_job(sim, customer_id=sim.tables["customer"].record_id(customer))
    return sim.index_of("job", created["id"])


# -- customers


def create_customer(sim: Simulator, *, name: str | None = None) -> dict[str, Any]:
    """Add a customer with a mobile phone contact, an e-mail contact and one location."""
    when = sim.now()
    customer = _new(sim, "customer", -1, when, None)
    if name is not None:
        sim.tables["customer"].override(customer, name=name)
    for _ in range(2):
        _new(sim, "customer_contact", customer, when, "customer")
    location = _new(sim, "location", customer, when, "customer")
    if name is not None:
        sim.tables["location"].override(location, name=name)
    _new(sim, "location_contact", location, when, "location")
    return sim.record("customer", customer)


# -- jobs and appointments


def create_job(
    sim: Simulator, *, customer_id: int | None = None, location_id: int | None = None
) -> dict[str, Any]:
    """Book a Scheduled job with one appointment, one technician and its invoice."""
    if location_id is not None:
        location = sim.index_of("location", location_id)
    elif customer_id is not None:
        customer = sim.index_of("customer", customer_id)
        locations = list(sim.tables["customer"].children["location"].of(customer))
        if not locations:
            raise ValueError(f"customer {customer_id} has no location to book a job at")
        location = locations[0]
    else:
        raise ValueError("create_job needs customer_id or location_id")
    when = sim.now()
    job = _new(sim, "job", location, when, "location")
    sim.set_status("job", job, "Scheduled")
    _add_appointment(sim, job, when)
    invoice = _new(sim, "invoice", job, when, None)
    if invoice != job:
        raise RuntimeError("invoice and job indexes diverged")
    return sim.record("job", job)


def _add_appointment(sim: Simulator, job: int, when: int) -> int:
    appointment = _new(sim, "appointment", job, when, "job")
    sim.set_status("appointment", appointment, "Scheduled")
    assignment = _new(sim, "appointment_assignment", appointment, when, "appointment")
    sim.set_status("appointment_assignment", assignment, "Scheduled")
    return appointment


def schedule_appointment(sim: Simulator, *, job_id: int) -> dict[str, Any]:
    """Add another Scheduled appointment to an open job."""
    job = sim.index_of("job", job_id)
    _expect_status(sim, "job", job, ("Scheduled", "Dispatched", "InProgress", "Hold"))
    when = sim.now()
    appointment = _add_appointment(sim, job, when)
    _touch(sim, "job", job, when)
    return sim.record("appointment", appointment)


def dispatch_appointment(sim: Simulator, *, id: int) -> dict[str, Any]:
    """Send the technician: the appointment, its assignments and its job become Dispatched."""
    appointment = sim.index_of("appointment", id)
    _expect_status(sim, "appointment", appointment, ("Scheduled", "Hold"))
    when = sim.now()
    sim.set_status("appointment", appointment, "Dispatched")
    _touch(sim, "appointment", appointment, when)
    for assignment in sim.tables["appointment"].children["appointment_assignment"].of(appointment):
        sim.set_status("appointment_assignment", assignment, "Dispatched")
        _touch(sim, "appointment_assignment", assignment, when)
    job = sim.tables["appointment"].parent[appointment]
    if sim.status_name("job", job) in ("Scheduled", "Hold"):
        sim.set_status("job", job, "Dispatched")
        _touch(sim, "job", job, when)
    return sim.record("appointment", appointment)


def _finish_job(sim: Simulator, job: int, status: str) -> None:
    when = sim.now()
    sim.set_status("job", job, status)
    _touch(sim, "job", job, when)
    appointment_status = "Done" if status == "Completed" else "Canceled"
    for appointment in sim.tables["job"].children["appointment"].of(job):
        if sim.status_name("appointment", appointment) in ("Done", "Canceled"):
            continue
        sim.set_status("appointment", appointment, appointment_status)
        _touch(sim, "appointment", appointment, when)
        for assignment in sim.tables["appointment"].children["appointment_assignment"].of(
            appointment
        ):
            if status == "Completed":
                sim.set_status("appointment_assignment", assignment, "Done")
            else:
                sim.tables["appointment_assignment"].active[assignment] = 0
            _touch(sim, "appointment_assignment", assignment, when)
    # Completing a job puts its charges on the invoice and on the customer's balance.
    _touch(sim, "invoice", job, when)
    customer = sim.ancestor("job", job, "customer")
    _touch(sim, "customer", customer, when)


def complete_job(sim: Simulator, *, id: int) -> dict[str, Any]:
    job = sim.index_of("job", id)
    _expect_status(sim, "job", job, ("Scheduled", "Dispatched", "InProgress", "Hold"))
    _finish_job(sim, job, "Completed")
    return sim.record("job", job)


def cancel_job(sim: Simulator, *, id: int) -> dict[str, Any]:
    job = sim.index_of("job", id)
    _expect_status(sim, "job", job, ("Scheduled", "Dispatched", "InProgress", "Hold"))
    _finish_job(sim, job, "Canceled")
    return sim.record("job", job)


# -- money and memberships


def pay_invoice(sim: Simulator, *, id: int, amount: float | str | None = None) -> dict[str, Any]:
    """Record a payment on an invoice (the whole balance by default); return the payment."""
    from rulesd.servicetitan.simulator.build import invoice_amounts

    invoice = sim.index_of("invoice", id)
    balance = invoice_amounts(sim, invoice)[3]
    if balance <= 0:
        raise ValueError(f"invoice {id} has no balance to pay")
    paid = Decimal(str(amount)).quantize(CENT) if amount is not None else balance
    if paid <= 0 or paid > balance:
        raise ValueError(f"invalid amount {amount}: must be above 0 and at most {balance}")
    when = sim.now()
    payment = _new(sim, "payment", invoice, when, "invoice")
    sim.tables["payment"].override(payment, total=money(paid))
    if paid == balance:
        sim.set_status("invoice", invoice, "Paid")
    _touch(sim, "invoice", invoice, when)
    _touch(sim, "customer", sim.ancestor("invoice", invoice, "customer"), when)
    return sim.record("payment", payment)


def cancel_membership(sim: Simulator, *, id: int) -> dict[str, Any]:
    membership = sim.index_of("membership", id)
    _expect_status(sim, "membership", membership, ("Active", "Suspended"))
    sim.set_status("membership", membership, "Canceled")
    _touch(sim, "membership", membership, sim.now())
    return sim.record("membership", membership)


def update_contact_preferences(
    sim: Simulator, *, id: int, do_not_text: bool | None = None,
    marketing_updates_enabled: bool | None = None,
) -> dict[str, Any]:
    """Change a customer contact's text opt-out or marketing preference."""
    index = sim.index_of("customer_contact", id)
    record = sim.record("customer_contact", index)
    if do_not_text is not None:
        record["phoneSettings"]["doNotText"] = bool(do_not_text)
        sim.tables["customer_contact"].override(index, phoneSettings=record["phoneSettings"])
    if marketing_updates_enabled is not None:
        record["preferences"]["marketingUpdatesEnabled"] = bool(marketing_updates_enabled)
        sim.tables["customer_contact"].override(index, preferences=record["preferences"])
    _touch(sim, "customer_contact", index, sim.now())
    return sim.record("customer_contact", index)


CHANGES: dict[str, Change] = {
    "sell_estimate": sell_estimate,
    "dismiss_estimate": dismiss_estimate,
    "create_estimate": create_estimate,
    "create_customer": create_customer,
    "create_job": create_job,
    "schedule_appointment": schedule_appointment,
    "dispatch_appointment": dispatch_appointment,
    "complete_job": complete_job,
    "cancel_job": cancel_job,
    "pay_invoice": pay_invoice,
    "cancel_membership": cancel_membership,
    "update_contact_preferences": update_contact_preferences,
}


def random_change(sim: Simulator, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    """Pick a plausible change for live activity: a name and its parameters, or None."""
    roll = rng.random()
    if roll < 0.08:
        return "create_customer", {}
    if roll < 0.22:
        customer = _recent(sim, "customer", rng, lambda i: bool(sim.tables["customer"].active[i]))
        if customer is None:
            return None
        return "create_job", {"customer_id": sim.tables["customer"].record_id(customer)}
    if roll < 0.32:
        job = _recent(sim, "job", rng, lambda i: sim.status_name("job", i) != "Canceled")
        return None if job is None else ("create_estimate", {"job_id": sim.tables["job"].record_id(job)})
    if roll < 0.45:
        estimate = _recent(sim, "estimate", rng, lambda i: sim.status_name("estimate", i) == "Open")
        if estimate is None:
            return None
        name = "sell_estimate" if rng.random() < 0.5 else "dismiss_estimate"
        return name, {"id": sim.tables["estimate"].record_id(estimate)}
    if roll < 0.60:
        appointment = _recent(
            sim, "appointment", rng, lambda i: sim.status_name("appointment", i) == "Scheduled"
        )
        if appointment is None:
            return None
        return "dispatch_appointment", {"id": sim.tables["appointment"].record_id(appointment)}
    if roll < 0.80:
        job = _recent(sim, "job", rng, lambda i: sim.status_name("job", i) in (
            "Scheduled", "Dispatched", "InProgress"))
        if job is None:
            return None
        name = "complete_job" if rng.random() < 0.9 else "cancel_job"
        return name, {"id": sim.tables["job"].record_id(job)}
    if roll < 0.95:
        from rulesd.servicetitan.simulator.build import invoice_amounts

        invoice = _recent(sim, "invoice", rng, lambda i: invoice_amounts(sim, i)[3] > 0)
        return None if invoice is None else ("pay_invoice", {"id": sim.tables["invoice"].record_id(invoice)})
    job = _recent(sim, "job", rng, lambda i: sim.status_name("job", i) in ("Scheduled", "Dispatched"))
    return None if job is None else ("schedule_appointment", {"job_id": sim.tables["job"].record_id(job)})


def _recent(
    sim: Simulator, entity: str, rng: random.Random, accept: Callable[[int], bool]
) -> int | None:
    """Pick a record among the newest tenth of ``entity`` that ``accept`` allows."""
    count = sim.tables[entity].count
    if count == 0:
        return None
    low = max(0, count - max(50, count // 10))
    for _ in range(40):
        index = rng.randrange(low, count)
        if accept(index):
            return index
    return None
