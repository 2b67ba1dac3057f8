"""Generate the compact state of a tenant: record counts, links, times and statuses.

Everything a record shows beyond this state (names, addresses, amounts)
is derived in ``build`` from the record's own random generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rulesd.servicetitan.simulator import vocabulary as vocab
from rulesd.servicetitan.simulator.fastrandom import FastRandom
from rulesd.servicetitan.simulator.state import Children, Table
from rulesd.servicetitan.simulator.tenant import (
    APPOINTMENT_FOR_JOB,
    ASSIGNMENT_FOR_APPOINTMENT,
    DAY,
    HISTORY,
    RECENT,
)

if TYPE_CHECKING:
    from rulesd.servicetitan.simulator.tenant import Simulator

MINUTE = 60 * 1_000_000


def reference_sizes(customers: int) -> dict[str, int]:
    """Return how many records of each reference entity a tenant of ``customers`` has."""
    return {
        "business_unit": len(vocab.BUSINESS_UNITS),
        "technician": max(6, min(400, customers // 800)),
        "employee": max(6, min(200, customers // 1500)),
        "job_type": len(vocab.JOB_TYPES),
        "campaign": len(vocab.CAMPAIGNS),
        "tag_type": len(vocab.TAG_TYPES),
    }


def generate_tenant(sim: Simulator) -> None:
    """Fill every table of ``sim`` deterministically from its seed."""
    start = sim.anchor - HISTORY
    _generate_reference(sim, start)
    _generate_customers(sim, start)


def _modified_after(rng: FastRandom, created: int, anchor: int) -> int:
    """Return a last-change time after ``created``: most records change within days."""
    room = anchor - created
    if room <= 0:
        return created
    delay = int(rng.expovariate(1 / (3 * DAY)))
    return created + min(delay, room)


def _generate_reference(sim: Simulator, start: int) -> None:
    for name, size in reference_sizes(sim.customer_count).items():
        table = sim.tables[name]
        for index in range(size):
            rng = sim.rng(name, index, salt=1)
            created = start - 30 * DAY + index * MINUTE * 7
            table.append(parent=-1, created=created, active=rng.random() > 0.08 or index < 4)
            table.modified[index] = _modified_after(rng, created, sim.anchor)
            if name == "technician":
                table.status[index] = rng.randrange(4)


def _generate_customers(sim: Simulator, start: int) -> None:
    customers = sim.tables["customer"]
    tables = sim.tables
    links = {
        ("customer", "customer_contact"): Children(),
        ("customer", "location"): Children(),
        ("customer", "membership"): Children(),
        ("location", "location_contact"): Children(),
        ("location", "job"): Children(),
        ("job", "appointment"): Children(),
        ("job", "estimate"): Children(),
        ("appointment", "appointment_assignment"): Children(),
        ("invoice", "payment"): Children(),
    }
    for (parent, child), children in links.items():
        tables[parent].children[child] = children

    count = sim.customer_count
    anchor = sim.anchor
    for c in range(count):
        rng = sim.rng("customer", c, salt=2)
        created = start + (HISTORY * c) // count + rng.randrange(HISTORY // count + 1)
        created = min(created, anchor - MINUTE)
        customers.append(parent=-1, created=created, active=rng.random() > 0.02)
        customers.modified[c] = _modified_after(rng, created, anchor)

        for _ in range(rng.choice((1, 1, 2, 2, 2, 3))):
            _child(tables["customer_contact"], c, created, rng, anchor, inactive=0.02)
        links[("customer", "customer_contact")].close_parent(tables["customer_contact"].count)

        location_count = 1 if rng.random() < 0.85 else rng.choice((2, 2, 3))
        for _ in range(location_count):
            _generate_location(sim, c, created, rng, links)
        links[("customer", "location")].close_parent(tables["location"].count)

        if rng.random() < 0.3:
            membership = _child(tables["membership"], c, created, rng, anchor, inactive=0.0)
            status = _pick(rng, (("Active", 0.75), ("Expired", 0.10), ("Canceled", 0.10),
                                 ("Suspended", 0.04), ("Deleted", 0.01)))
            sim.set_status("membership", membership, status)
            tables["membership"].active[membership] = 0 if status == "Deleted" else 1
        links[("customer", "membership")].close_parent(tables["membership"].count)


def _child(
    table: Table, parent: int, after: int, rng: FastRandom, anchor: int, *, inactive: float
) -> int:
    created = min(anchor, after + int(rng.random() * DAY))
    index = table.append(parent=parent, created=created, active=rng.random() >= inactive)
    table.modified[index] = _modified_after(rng, created, anchor)
    return index


def _generate_location(
    sim: Simulator,
    customer: int,
    customer_created: int,
    rng: FastRandom,
    links: dict[tuple[str, str], Children],
) -> None:
    tables = sim.tables
    anchor = sim.anchor
    location = _child(tables["location"], customer, customer_created, rng, anchor, inactive=0.02)
    location_created = tables["location"].created[location]

    if rng.random() < 0.6:
        _child(tables["location_contact"], location, location_created, rng, anchor, inactive=0.02)
    links[("location", "location_contact")].close_parent(tables["location_contact"].count)

    for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 3, 4, 5, 6))):
        job_created = location_created + int(rng.random() * (anchor - location_created))
        _generate_job(sim, location, job_created, rng, links)
    links[("location", "job")].close_parent(tables["job"].count)


def _job_status(rng: FastRandom, age: int) -> str:
    if age > RECENT:
        return "Completed" if rng.random() < 0.88 else "Canceled"
    return rng.choice(("Scheduled", "Scheduled", "Scheduled", "Dispatched", "InProgress",
                       "Hold", "Completed"))


def _generate_job(
    sim: Simulator,
    location: int,
    created: int,
    rng: FastRandom,
    links: dict[tuple[str, str], Children],
) -> None:
    tables = sim.tables
    anchor = sim.anchor
    jobs = tables["job"]
    status = _job_status(rng, anchor - created)
    job = jobs.append(parent=location, created=created)
    sim.set_status("job", job, status)
    jobs.modified[job] = _modified_after(rng, created, anchor)

    appointment_status = APPOINTMENT_FOR_JOB[status]
    for _ in range(1 if rng.random() < 0.85 else 2):
        appointment = tables["appointment"].append(parent=job, created=created)
        tables["appointment"].modified[appointment] = jobs.modified[job]
        sim.set_status("appointment", appointment, appointment_status)
        assignment = tables["appointment_assignment"].append(
            parent=appointment, created=created, active=status != "Canceled"
        )
        tables["appointment_assignment"].modified[assignment] = jobs.modified[job]
        sim.set_status(
            "appointment_assignment", assignment, ASSIGNMENT_FOR_APPOINTMENT[appointment_status]
        )
        links[("appointment", "appointment_assignment")].close_parent(
            tables["appointment_assignment"].count
        )
    links[("job", "appointment")].close_parent(tables["appointment"].count)

    for _ in range(rng.choice((0, 0, 1, 1, 1, 2))):
        estimate = _child(tables["estimate"], job, created, rng, anchor, inactive=0.01)
        if status in ("Completed", "Canceled"):
            estimate_status = _pick(rng, (("Sold", 0.35), ("Dismissed", 0.25), ("Open", 0.40)))
        else:
            estimate_status = "Open"
        sim.set_status("estimate", estimate, estimate_status)
    links[("job", "estimate")].close_parent(tables["estimate"].count)

    # ServiceTitan opens one invoice with every job, so invoice i belongs to job i.
    invoice = tables["invoice"].append(parent=job, created=created, active=rng.random() > 0.005)
    tables["invoice"].modified[invoice] = jobs.modified[job]
    if status == "Completed" and rng.random() < 0.85:
        sim.set_status("invoice", invoice, "Paid")
        paid = min(anchor, jobs.modified[job] + int(rng.random() * 5 * DAY))
        payment = tables["payment"].append(parent=invoice, created=paid, active=rng.random() > 0.005)
        tables["payment"].modified[payment] = paid
        tables["invoice"].modified[invoice] = paid
    links[("invoice", "payment")].close_parent(tables["payment"].count)


def _pick(rng: FastRandom, weighted: tuple[tuple[str, float], ...]) -> str:
    """Return one name of ``weighted`` (name, probability) pairs; the last takes any remainder."""
    roll = rng.random()
    for name, probability in weighted:
        if roll < probability:
            return name
        roll -= probability
    return weighted[-1][0]
