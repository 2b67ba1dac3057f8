"""The simulated tenant: determinism, consistency, named changes, admin API and activity."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

import pytest

from rulesd.servicetitan.catalog import ENTITY_LIST
from rulesd.servicetitan.simulator import Behaviours, Simulator, SimulatorServer
from rulesd.servicetitan.simulator.activity import Activity
from rulesd.servicetitan.simulator.queries import ApiProblem, Queries


def test_simulator_same_seed_same_records() -> None:
    first = Simulator(seed=9, customers=40)
    second = Simulator(seed=9, customers=40, anchor=_anchor(first))
    assert first.counts() == second.counts()
    for entity in ENTITY_LIST:
        assert first.record(entity.name, 0) == second.record(entity.name, 0)


def test_simulator_other_seed_other_records() -> None:
    first = Simulator(seed=9, customers=40)
    second = Simulator(seed=10, customers=40, anchor=_anchor(first))
    assert first.record("customer", 5) != second.record("customer", 5)


def _anchor(sim: Simulator) -> Any:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(sim.anchor / 1_000_000, tz=timezone.utc)


def test_simulator_counts_every_catalog_entity() -> None:
    counts = Simulator(customers=50).counts()
    assert set(counts) == {entity.name for entity in ENTITY_LIST}
    assert all(count > 0 for count in counts.values())
    assert counts["invoice"] == counts["job"]


def test_simulator_records_link_consistently() -> None:
    sim = Simulator(seed=2, customers=60)
    for index in range(sim.table("estimate").count):
        estimate = sim.record("estimate", index)
        job = sim.get("job", estimate["jobId"])
        assert estimate["id"] in job["estimateIds"]
        assert job["customerId"] == estimate["customerId"]
        location = sim.get("location", job["locationId"])
        assert location["customerId"] == job["customerId"]
    for index in range(sim.table("payment").count):
        payment = sim.record("payment", index)
        invoice = sim.get("invoice", payment["appliedTo"][0]["appliedTo"])
        assert invoice["customer"]["id"] == payment["customer"]["id"]
        assert Decimal(invoice["balance"]) == Decimal(0)


def test_simulator_contacts_are_fictional() -> None:
    sim = Simulator(seed=4, customers=80)
    for index in range(sim.table("customer_contact").count):
        contact = sim.record("customer_contact", index)
        if contact["type"] == "Email":
            assert contact["value"].endswith("@example.com")
        else:
            assert re.fullmatch(r"\d{3}55501\d\d", contact["value"]), contact["value"]


def test_simulator_money_fields_are_strings() -> None:
    sim = Simulator(seed=4, customers=30)
    invoice = sim.record("invoice", 0)
    for field in ("subTotal", "salesTax", "total", "balance", "discountTotal"):
        assert isinstance(invoice[field], str)
        Decimal(invoice[field])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", invoice["modifiedOn"])


def test_change_sell_estimate_moves_modified_on() -> None:
    sim = Simulator(seed=3, customers=60)
    estimates = sim.table("estimate")
    index = next(i for i in range(estimates.count) if sim.status_name("estimate", i) == "Open")
    before = sim.record("estimate", index)
    sold = sim.apply("sell_estimate", id=before["id"])
    assert sold["status"] == {"value": 1, "name": "Sold"}
    assert sold["modifiedOn"] > before["modifiedOn"]
    assert sold["soldOn"] == sold["modifiedOn"]
    with pytest.raises(ValueError, match="is Sold"):
        sim.apply("sell_estimate", id=before["id"])


def test_change_complete_job_updates_children() -> None:
    sim = Simulator(seed=3, customers=60)
    job = sim.apply("create_job", customer_id=sim.table("customer").record_id(3))
    assert job["jobStatus"] == "Scheduled"
    invoice = sim.get("invoice", job["invoiceId"])
    assert invoice["total"] == "0.00"

    completed = sim.apply("complete_job", id=job["id"])
    assert completed["jobStatus"] == "Completed"
    assert completed["completedOn"] is not None
    appointment = sim.get("appointment", job["firstAppointmentId"])
    assert appointment["status"] == "Done"
    invoice = sim.get("invoice", job["invoiceId"])
    assert Decimal(invoice["balance"]) > 0

    payment = sim.apply("pay_invoice", id=job["invoiceId"])
    assert payment["total"] == invoice["balance"]
    assert sim.get("invoice", job["invoiceId"])["balance"] == "0.00"


def test_change_create_estimate_with_subtotal() -> None:
    sim = Simulator(seed=3, customers=20)
    customer_id = sim.table("customer").record_id(0)
    estimate = sim.apply("create_estimate", customer_id=customer_id, subtotal=1234.5)
    assert estimate["subtotal"] == 1234.5
    assert estimate["status"]["name"] == "Open"
    assert estimate["customerId"] == customer_id


def test_change_unknown_name_lists_known() -> None:
    sim = Simulator(customers=5)
    with pytest.raises(KeyError, match="sell_estimate"):
        sim.apply("sell_everything")


def test_change_unknown_id_not_found() -> None:
    sim = Simulator(customers=5)
    with pytest.raises(LookupError, match="estimate 1 not found"):
        sim.apply("sell_estimate", id=1)


def test_list_rejects_oversized_page() -> None:
    sim = Simulator(customers=5)
    from rulesd.servicetitan.catalog import ENTITIES

    with pytest.raises(ApiProblem) as caught:
        Queries(sim).list_page(ENTITIES["customer"], {"pageSize": "5001"})
    assert caught.value.status == 400


def test_list_defaults_to_active_only() -> None:
    sim = Simulator(seed=8, customers=300)
    from rulesd.servicetitan.catalog import ENTITIES

    queries = Queries(sim)
    active = queries.list_page(ENTITIES["customer"], {"pageSize": "5000"})
    every = queries.list_page(ENTITIES["customer"], {"pageSize": "5000", "active": "Any"})
    assert all(record["active"] for record in active["data"])
    assert len(every["data"]) == sim.counts()["customer"] > len(active["data"])


def test_export_delay_hides_recent_changes() -> None:
    sim = Simulator(seed=8, customers=20, behaviours=Behaviours(export_delay=900))
    from rulesd.servicetitan.catalog import ENTITIES

    queries = Queries(sim)
    token = queries.export_page(ENTITIES["customer"], {})["continueFrom"]
    created = sim.apply("create_customer")
    delayed = queries.export_page(ENTITIES["customer"], {"from": token})
    recent = queries.export_page(ENTITIES["customer"], {"from": token, "includeRecentChanges": "true"})
    assert delayed["data"] == []
    assert [r["id"] for r in recent["data"]] == [created["id"]]


def test_export_from_date_is_inclusive() -> None:
    sim = Simulator(seed=8, customers=20)
    from rulesd.servicetitan.catalog import ENTITIES

    created = sim.apply("create_customer")
    page = Queries(sim).export_page(ENTITIES["customer"], {"from": created["modifiedOn"]})
    assert [r["id"] for r in page["data"]] == [created["id"]]


def test_activity_applies_changes() -> None:
    sim = Simulator(seed=6, customers=100)
    activity = Activity(sim, per_minute=60, seed=1)
    for _ in range(40):
        activity.step()
    assert activity.applied > 20
    assert sim.changes_applied == activity.applied


def admin(server: SimulatorServer, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{server.base_url}/_sim/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_admin_api_scripts_a_story(server: SimulatorServer) -> None:
    status, counts = admin(server, "GET", "counts")
    assert status == 200
    assert counts == server.sim.counts()

    status, customer = admin(server, "POST", "changes", {"change": "create_customer", "name": "Ada Demo"})
    assert status == 200
    assert customer["name"] == "Ada Demo"
    status, estimate = admin(server, "POST", "changes",
                             {"change": "create_estimate", "customer_id": customer["id"], "subtotal": 900})
    assert status == 200
    status, sold = admin(server, "POST", "changes", {"change": "sell_estimate", "id": estimate["id"]})
    assert status == 200
    assert sold["status"]["name"] == "Sold"

    status, record = admin(server, "GET", f"records/estimate/{estimate['id']}")
    assert status == 200
    assert record["status"]["name"] == "Sold"


def test_admin_api_rejects_bad_changes(server: SimulatorServer) -> None:
    assert admin(server, "POST", "changes", {"change": "nope"})[0] == 404
    assert admin(server, "POST", "changes", {"change": "sell_estimate", "id": 5})[0] == 404
    status, body = admin(server, "POST", "changes", {"change": "sell_estimate", "colour": 5})
    assert status == 400
    assert "sell_estimate" in body["error"]
    assert admin(server, "POST", "changes", {})[0] == 400


def test_admin_api_sets_faults(server: SimulatorServer) -> None:
    status, faults = admin(server, "POST", "faults", {"throttle_next": 2, "throttle_wait": 0})
    assert status == 200
    assert faults["throttle_next"] == 2
    assert admin(server, "POST", "faults", {"bogus": 1})[0] == 400
    status, faults = admin(server, "POST", "faults", {"reset": True})
    assert faults["throttle_next"] == 0


def test_admin_api_starts_activity(server: SimulatorServer) -> None:
    status, body = admin(server, "POST", "activity", {"per_minute": 600})
    assert status == 200
    before = server.sim.changes_applied
    deadline = time.monotonic() + 20
    while server.sim.changes_applied == before and time.monotonic() < deadline:
        time.sleep(0.05)
    admin(server, "POST", "activity", {"per_minute": 0})
    assert server.sim.changes_applied > before


def test_server_rejects_request_without_token(server: SimulatorServer) -> None:
    request = urllib.request.Request(f"{server.base_url}/crm/v2/tenant/999/customers")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401


# Fields that a status change may change; every other field must stay as it was.
STATUS_FIELDS = {
    "estimate": {"status", "modifiedOn", "soldOn", "soldBy"},
    "job": {"jobStatus", "modifiedOn", "completedOn", "soldById", "total"},
}


@pytest.mark.parametrize(("entity", "change", "status"), [("estimate", "sell_estimate", "Open"), ("job", "complete_job", "Scheduled")])
def test_status_change_keeps_other_fields(entity: str, change: str, status: str) -> None:
    sim = Simulator(seed=3, customers=200)
    table = sim.table(entity)
    indexes = [i for i in range(table.count) if sim.status_name(entity, i) == status][:20]
    assert indexes

    for index in indexes:
        before = sim.record(entity, index)
        after = sim.apply(change, id=before["id"])
        changed = {key for key in after if after[key] != before[key]}
        assert changed <= STATUS_FIELDS[entity], (before["id"], changed - STATUS_FIELDS[entity])
