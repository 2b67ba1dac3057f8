"""The entity catalog: the one place that knows ServiceTitan's record shapes.

Sync, change triggers, the condition type checker, the simulator and the
docs all read this module. Adding an entity is an entry here plus a
migration that creates its mirror table; ``tests`` check that the two agree.

Paths and field names follow ServiceTitan's v2 OpenAPI documents. URLs are
``{base}/{module}/v2/tenant/{tenant}/{path}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["bigint", "integer", "numeric", "text", "boolean", "timestamptz", "jsonb"]
ValueKind = Literal["number", "string", "boolean", "time", "json"]
ActiveParam = Literal["active", "activeState"]

# The condition language's value kind for each column type.
VALUE_KIND: dict[ColumnType, ValueKind] = {
    "bigint": "number",
    "integer": "number",
    "numeric": "number",
    "text": "string",
    "boolean": "boolean",
    "timestamptz": "time",
    "jsonb": "json",
}


@dataclass(frozen=True)
class Column:
    """A typed mirror column and where its value comes from in the API record.

    ``source`` is a dotted path into the record (``status.name``,
    ``phoneSettings.doNotText``). ``generated`` is a SQL expression for a
    column Postgres computes itself; sync never writes such a column.
    """

    name: str
    type: ColumnType
    source: str | None = None
    generated: str | None = None
    description: str = ""

    @property
    def kind(self) -> ValueKind:
        return VALUE_KIND[self.type]


@dataclass(frozen=True)
class Relation:
    """A link from one entity to another.

    ``to_one``: ``column`` on this entity holds the other entity's id
    (an estimate's ``customer_id``). ``to_many``: ``column`` on the other
    entity holds this entity's id (a customer's contacts).
    """

    name: str
    entity: str
    column: str
    cardinality: Literal["to_one", "to_many"] = "to_one"


@dataclass(frozen=True)
class Entity:
    """One synced ServiceTitan entity and its mirror table."""

    name: str
    table: str
    module: str
    list_path: str
    export_path: str | None
    spec_file: str
    scope: str
    columns: tuple[Column, ...]
    relations: tuple[Relation, ...] = ()
    status_column: str | None = None
    status_values: tuple[str, ...] = ()
    active_param: ActiveParam | None = "active"
    # Some list endpoints reject a call with no id list and no date filter.
    list_requires_filter: bool = False
    # Sync order: reference data (0) before customers (1), work (2), money (3).
    tier: int = 2
    description: str = ""
    column_index: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_index", {c.name: c for c in self.columns})

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """Typed columns plus the columns every mirror table has."""
        return COMMON_COLUMNS + self.columns

    def column(self, name: str) -> Column | None:
        if name in self.column_index:
            return self.column_index[name]
        for common in COMMON_COLUMNS:
            if common.name == name:
                return common
        return None

    def relation(self, name: str) -> Relation | None:
        for relation in self.relations:
            if relation.name == name:
                return relation
        return None

    @property
    def writable_columns(self) -> tuple[Column, ...]:
        """Columns that sync fills from the record (not generated ones)."""
        return tuple(c for c in self.all_columns if c.generated is None and c.source is not None)


# Every mirror table has these typed columns besides ``raw jsonb``,
# ``synced_at`` and ``missing_since``.
COMMON_COLUMNS: tuple[Column, ...] = (
    Column("id", "bigint", "id", description="ServiceTitan id"),
    Column("active", "boolean", "active"),
    Column("created_on", "timestamptz", "createdOn"),
    Column("modified_on", "timestamptz", "modifiedOn"),
)

# Columns every mirror table has that are not read from the record.
BOOKKEEPING_COLUMNS = ("raw", "synced_at", "missing_since")


def _address(prefix: str, source: str) -> tuple[Column, ...]:
    return (
        Column(f"{prefix}street", "text", f"{source}.street"),
        Column(f"{prefix}unit", "text", f"{source}.unit"),
        Column(f"{prefix}city", "text", f"{source}.city"),
        Column(f"{prefix}state", "text", f"{source}.state"),
        Column(f"{prefix}zip", "text", f"{source}.zip"),
        Column(f"{prefix}country", "text", f"{source}.country"),
    )


def _contact_columns() -> tuple[Column, ...]:
    return (
        Column("type", "text", "type", description="Phone, Email, Fax or MobilePhone"),
        Column("value", "text", "value", description="the phone number or e-mail address"),
        Column("memo", "text", "memo"),
        Column("phone_number", "text", "phoneSettings.phoneNumber"),
        Column("do_not_text", "boolean", "phoneSettings.doNotText"),
        Column("job_reminders_enabled", "boolean", "preferences.jobRemindersEnabled"),
        Column("marketing_updates_enabled", "boolean", "preferences.marketingUpdatesEnabled"),
        Column("invoice_notification", "boolean", "preferences.invoiceNotification"),
        Column("statement_notification", "boolean", "preferences.statementNotification"),
    )


ENTITY_LIST: tuple[Entity, ...] = (
    Entity(
        name="business_unit",
        table="st_business_units",
        module="settings",
        list_path="business-units",
        export_path="export/business-units",
        spec_file="settings-v2.json",
        scope="tn.stt.businessunits:r",
        tier=0,
        columns=(
            Column("name", "text", "name"),
            Column("official_name", "text", "officialName"),
            Column("email", "text", "email"),
            Column("phone_number", "text", "phoneNumber"),
            Column("trade_name", "text", "trade.name"),
        ),
    ),
    Entity(
        name="technician",
        table="st_technicians",
        module="settings",
        list_path="technicians",
        export_path="export/technicians",
        spec_file="settings-v2.json",
        scope="tn.stt.technicians:r",
        tier=0,
        columns=(
            Column("user_id", "bigint", "userId"),
            Column("name", "text", "name"),
            Column("first_name", "text", "firstName"),
            Column("email", "text", "email"),
            Column("phone_number", "text", "phoneNumber"),
            Column("mobile_phone", "text", "mobilePhone"),
            Column("business_unit_id", "bigint", "businessUnitId"),
            Column("status", "text", "status"),
        ),
        relations=(Relation("business_unit", "business_unit", "business_unit_id"),),
    ),
    Entity(
        name="employee",
        table="st_employees",
        module="settings",
        list_path="employees",
        export_path="export/employees",
        spec_file="settings-v2.json",
        scope="tn.stt.employees:r",
        tier=0,
        columns=(
            Column("user_id", "bigint", "userId"),
            Column("name", "text", "name"),
            Column("email", "text", "email"),
            Column("phone_number", "text", "phoneNumber"),
            Column("role", "text", "role"),
            Column("business_unit_id", "bigint", "businessUnitId"),
        ),
        relations=(Relation("business_unit", "business_unit", "business_unit_id"),),
    ),
    Entity(
        name="job_type",
        table="st_job_types",
        module="jpm",
        list_path="job-types",
        export_path=None,
        spec_file="jpm-v2.json",
        scope="tn.jpm.jobtypes:r",
        tier=0,
        columns=(
            Column("name", "text", "name"),
            Column("priority", "text", "priority"),
            Column("duration", "bigint", "duration", description="seconds"),
            Column("sold_threshold", "numeric", "soldThreshold"),
            Column("job_class", "text", "class"),
            Column("no_charge", "boolean", "noCharge"),
        ),
    ),
    Entity(
        name="campaign",
        table="st_campaigns",
        module="marketing",
        list_path="campaigns",
        export_path=None,
        spec_file="marketing-v2.json",
        scope="tn.mrk.campaigns:r",
        tier=0,
        columns=(
            Column("name", "text", "name"),
            Column("category_name", "text", "category.name"),
            Column("source", "text", "source"),
            Column("medium", "text", "medium"),
            Column("is_default_campaign", "boolean", "isDefaultCampaign"),
        ),
    ),
    Entity(
        name="tag_type",
        table="st_tag_types",
        module="settings",
        list_path="tag-types",
        export_path="export/tag-types",
        spec_file="settings-v2.json",
        scope="tn.stt.tagtypes:r",
        tier=0,
        columns=(
            Column("name", "text", "name"),
            Column("code", "text", "code"),
            Column("color", "text", "color"),
            Column("importance", "text", "importance"),
            Column("is_conversion_opportunity", "boolean", "isConversionOpportunity"),
        ),
    ),
    Entity(
        name="customer",
        table="st_customers",
        module="crm",
        list_path="customers",
        export_path="export/customers",
        spec_file="crm-v2.json",
        scope="tn.crm.customers:r",
        tier=1,
        columns=(
            Column("name", "text", "name"),
            Column("type", "text", "type", description="Residential or Commercial"),
            Column("balance", "numeric", "balance"),
            Column("tax_exempt", "boolean", "taxExempt"),
            Column("do_not_mail", "boolean", "doNotMail"),
            Column("do_not_service", "boolean", "doNotService"),
            Column("national_account", "boolean", "nationalAccount"),
            Column("merged_to_id", "bigint", "mergedToId"),
            Column("created_by_id", "bigint", "createdById"),
            Column("credit_limit", "numeric", "creditLimit"),
            *_address("address_", "address"),
        ),
        relations=(
            Relation("contacts", "customer_contact", "customer_id", "to_many"),
            Relation("locations", "location", "customer_id", "to_many"),
        ),
    ),
    Entity(
        name="customer_contact",
        table="st_customer_contacts",
        module="crm",
        list_path="customers/contacts",
        export_path="export/customers/contacts",
        spec_file="crm-v2.json",
        scope="tn.crm.customers:r",
        tier=1,
        list_requires_filter=True,
        active_param=None,
        columns=(Column("customer_id", "bigint", "customerId"), *_contact_columns()),
        relations=(Relation("customer", "customer", "customer_id"),),
    ),
    Entity(
        name="location",
        table="st_locations",
        module="crm",
        list_path="locations",
        export_path="export/locations",
        spec_file="crm-v2.json",
        scope="tn.crm.locations:r",
        tier=1,
        columns=(
            Column("customer_id", "bigint", "customerId"),
            Column("name", "text", "name"),
            Column("zone_id", "bigint", "zoneId"),
            Column("tax_zone_id", "bigint", "taxZoneId"),
            Column("tax_exempt", "boolean", "taxExempt"),
            Column("merged_to_id", "bigint", "mergedToId"),
            *_address("address_", "address"),
        ),
        relations=(
            Relation("customer", "customer", "customer_id"),
            Relation("contacts", "location_contact", "location_id", "to_many"),
        ),
    ),
    Entity(
        name="location_contact",
        table="st_location_contacts",
        module="crm",
        list_path="locations/contacts",
        export_path="export/locations/contacts",
        spec_file="crm-v2.json",
        scope="tn.crm.locations:r",
        tier=1,
        list_requires_filter=True,
        active_param=None,
        columns=(Column("location_id", "bigint", "locationId"), *_contact_columns()),
        relations=(Relation("location", "location", "location_id"),),
    ),
    Entity(
        name="job",
        table="st_jobs",
        module="jpm",
        list_path="jobs",
        export_path="export/jobs",
        spec_file="jpm-v2.json",
        scope="tn.jpm.jobs:r",
        tier=2,
        active_param=None,
        status_column="job_status",
        status_values=("Scheduled", "Dispatched", "InProgress", "Hold", "Completed", "Canceled"),
        columns=(
            Column("job_number", "text", "jobNumber"),
            Column("customer_id", "bigint", "customerId"),
            Column("location_id", "bigint", "locationId"),
            Column("job_status", "text", "jobStatus"),
            Column("completed_on", "timestamptz", "completedOn"),
            Column("business_unit_id", "bigint", "businessUnitId"),
            Column("job_type_id", "bigint", "jobTypeId"),
            Column("priority", "text", "priority"),
            Column("campaign_id", "bigint", "campaignId"),
            Column("project_id", "bigint", "projectId"),
            Column("appointment_count", "bigint", "appointmentCount"),
            Column("first_appointment_id", "bigint", "firstAppointmentId"),
            Column("last_appointment_id", "bigint", "lastAppointmentId"),
            Column("recall_for_id", "bigint", "recallForId"),
            Column("warranty_id", "bigint", "warrantyId"),
            Column("no_charge", "boolean", "noCharge"),
            Column("notifications_enabled", "boolean", "notificationsEnabled"),
            Column("sold_by_id", "bigint", "soldById"),
            Column("invoice_id", "bigint", "invoiceId"),
            Column("membership_id", "bigint", "membershipId"),
            Column("created_from_estimate_id", "bigint", "createdFromEstimateId"),
            Column("total", "numeric", "total"),
            Column("summary", "text", "summary", description="HTML"),
            Column("customer_po", "text", "customerPo"),
            Column("created_by_id", "bigint", "createdById"),
        ),
        relations=(
            Relation("customer", "customer", "customer_id"),
            Relation("location", "location", "location_id"),
            Relation("business_unit", "business_unit", "business_unit_id"),
            Relation("job_type", "job_type", "job_type_id"),
            Relation("campaign", "campaign", "campaign_id"),
        ),
    ),
    Entity(
        name="appointment",
        table="st_appointments",
        module="jpm",
        list_path="appointments",
        export_path="export/appointments",
        spec_file="jpm-v2.json",
        scope="tn.jpm.appointments:r",
        tier=2,
        status_column="status",
        status_values=("Scheduled", "Dispatched", "Working", "Hold", "Done", "Canceled"),
        columns=(
            Column("job_id", "bigint", "jobId"),
            Column("customer_id", "bigint", "customerId"),
            Column("appointment_number", "text", "appointmentNumber"),
            Column("starts_at", "timestamptz", "start"),
            Column("ends_at", "timestamptz", "end"),
            Column("arrival_window_start", "timestamptz", "arrivalWindowStart"),
            Column("arrival_window_end", "timestamptz", "arrivalWindowEnd"),
            Column("status", "text", "status"),
            Column("special_instructions", "text", "specialInstructions"),
            Column("is_confirmed", "boolean", "isConfirmed"),
            Column("unused", "boolean", "unused"),
        ),
        relations=(
            Relation("job", "job", "job_id"),
            Relation("customer", "customer", "customer_id"),
        ),
    ),
    Entity(
        name="appointment_assignment",
        table="st_appointment_assignments",
        module="dispatch",
        list_path="appointment-assignments",
        export_path="export/appointment-assignments",
        spec_file="dispatch-v2.json",
        scope="tn.dis.appointmentassignments:r",
        tier=2,
        status_column="status",
        status_values=("Scheduled", "Dispatched", "Working", "Done"),
        columns=(
            Column("technician_id", "bigint", "technicianId"),
            Column("technician_name", "text", "technicianName"),
            Column("assigned_by_id", "bigint", "assignedById"),
            Column("assigned_on", "timestamptz", "assignedOn"),
            Column("status", "text", "status"),
            Column("is_paused", "boolean", "isPaused"),
            Column("job_id", "bigint", "jobId"),
            Column("appointment_id", "bigint", "appointmentId"),
        ),
        relations=(
            Relation("technician", "technician", "technician_id"),
            Relation("job", "job", "job_id"),
            Relation("appointment", "appointment", "appointment_id"),
        ),
    ),
    Entity(
        name="estimate",
        table="st_estimates",
        module="sales",
        list_path="estimates",
        export_path="export/estimates",
        spec_file="salestech-v2.json",
        scope="tn.sal.estimates:r",
        tier=2,
        status_column="status",
        status_values=("Open", "Sold", "Dismissed"),
        columns=(
            Column("job_id", "bigint", "jobId"),
            Column("project_id", "bigint", "projectId"),
            Column("location_id", "bigint", "locationId"),
            Column("customer_id", "bigint", "customerId"),
            Column("name", "text", "name"),
            Column("job_number", "text", "jobNumber"),
            Column("status", "text", "status.name", description="Open, Sold or Dismissed"),
            Column("status_value", "integer", "status.value"),
            Column("review_status", "text", "reviewStatus"),
            Column("summary", "text", "summary"),
            Column("sold_on", "timestamptz", "soldOn"),
            Column("sold_by", "bigint", "soldBy", description="technician id"),
            Column("subtotal", "numeric", "subtotal"),
            Column("tax", "numeric", "tax"),
            Column(
                "total",
                "numeric",
                generated="coalesce(subtotal, 0) + coalesce(tax, 0)",
                description="subtotal plus tax, computed by Postgres",
            ),
            Column("business_unit_id", "bigint", "businessUnitId"),
            Column("business_unit_name", "text", "businessUnitName"),
            Column("is_recommended", "boolean", "isRecommended"),
            Column("is_change_order", "boolean", "isChangeOrder"),
            Column("deposit_amount", "numeric", "depositAmount"),
        ),
        relations=(
            Relation("job", "job", "job_id"),
            Relation("customer", "customer", "customer_id"),
            Relation("location", "location", "location_id"),
            Relation("business_unit", "business_unit", "business_unit_id"),
            Relation("sold_by_technician", "technician", "sold_by"),
        ),
    ),
    Entity(
        name="invoice",
        table="st_invoices",
        module="accounting",
        list_path="invoices",
        export_path="export/invoices",
        spec_file="accounting-v2.json",
        scope="tn.acc.invoices:r",
        tier=3,
        active_param="activeState",
        columns=(
            Column("reference_number", "text", "referenceNumber"),
            Column("invoice_date", "timestamptz", "invoiceDate"),
            Column("due_date", "timestamptz", "dueDate"),
            Column("sub_total", "numeric", "subTotal", description="sent as a string"),
            Column("sales_tax", "numeric", "salesTax", description="sent as a string"),
            Column("total", "numeric", "total", description="sent as a string"),
            Column("balance", "numeric", "balance", description="sent as a string"),
            Column("discount_total", "numeric", "discountTotal", description="sent as a string"),
            Column("customer_id", "bigint", "customer.id"),
            Column("location_id", "bigint", "location.id"),
            Column("business_unit_id", "bigint", "businessUnit.id"),
            Column("job_id", "bigint", "job.id"),
            Column("job_number", "text", "job.number"),
            Column("project_id", "bigint", "projectId"),
            Column("sync_status", "text", "syncStatus"),
            Column("sent_status", "text", "sentStatus"),
            Column("review_status", "text", "reviewStatus"),
            Column("paid_on", "timestamptz", "paidOn"),
            Column("membership_id", "bigint", "membershipId"),
            Column("invoice_type", "text", "invoiceType.name"),
            Column("adjustment_to_id", "bigint", "adjustmentToId"),
            Column("summary", "text", "summary"),
        ),
        relations=(
            Relation("customer", "customer", "customer_id"),
            Relation("location", "location", "location_id"),
            Relation("job", "job", "job_id"),
            Relation("business_unit", "business_unit", "business_unit_id"),
        ),
    ),
    Entity(
        name="payment",
        table="st_payments",
        module="accounting",
        list_path="payments",
        export_path="export/payments",
        spec_file="accounting-v2.json",
        scope="tn.acc.payments:r",
        tier=3,
        active_param="activeState",
        columns=(
            Column("customer_id", "bigint", "customer.id"),
            Column("business_unit_id", "bigint", "businessUnit.id"),
            Column("total", "numeric", "total", description="sent as a string"),
            Column("unapplied_amount", "numeric", "unappliedAmount", description="sent as a string"),
            Column("type", "text", "type"),
            Column("type_id", "text", "typeId", description="sent as a string"),
            Column("paid_on", "timestamptz", "date"),
            Column("reference_number", "text", "referenceNumber"),
            Column("memo", "text", "memo"),
            Column("refunded_payment_id", "bigint", "refundedPaymentId"),
            Column("sync_status", "text", "syncStatus"),
        ),
        relations=(
            Relation("customer", "customer", "customer_id"),
            Relation("business_unit", "business_unit", "business_unit_id"),
        ),
    ),
    Entity(
        name="membership",
        table="st_memberships",
        module="memberships",
        list_path="memberships",
        export_path="export/memberships",
        spec_file="memberships-v2.json",
        scope="tn.mem.memberships:r",
        tier=3,
        status_column="status",
        status_values=("Active", "Suspended", "Expired", "Canceled", "Deleted"),
        columns=(
            Column("customer_id", "bigint", "customerId"),
            Column("location_id", "bigint", "locationId"),
            Column("business_unit_id", "bigint", "businessUnitId"),
            Column("membership_type_id", "bigint", "membershipTypeId"),
            Column("status", "text", "status"),
            Column("follow_up_status", "text", "followUpStatus"),
            Column("starts_on", "timestamptz", "from"),
            Column("ends_on", "timestamptz", "to"),
            Column("billing_frequency", "text", "billingFrequency"),
            Column("duration", "integer", "duration", description="months; null means ongoing"),
            Column("cancellation_date", "timestamptz", "cancellationDate"),
            Column("next_scheduled_bill_date", "timestamptz", "nextScheduledBillDate"),
            Column("follow_up_on", "timestamptz", "followUpOn"),
            Column("sold_by_id", "bigint", "soldById"),
            Column("memo", "text", "memo"),
        ),
        relations=(
            Relation("customer", "customer", "customer_id"),
            Relation("location", "location", "location_id"),
            Relation("business_unit", "business_unit", "business_unit_id"),
        ),
    ),
)

ENTITIES: dict[str, Entity] = {entity.name: entity for entity in ENTITY_LIST}
ENTITIES_BY_TABLE: dict[str, Entity] = {entity.table: entity for entity in ENTITY_LIST}


def get_entity(name: str) -> Entity:
    """Return the entity called ``name``; raise ``KeyError`` listing the known names."""
    try:
        return ENTITIES[name]
    except KeyError:
        known = ", ".join(sorted(ENTITIES))
        raise KeyError(f"unknown entity {name!r}; known entities: {known}") from None


def related_entities(name: str) -> dict[str, tuple[Relation, ...]]:
    """Map every alias reachable from entity ``name`` through to-one relations to its path.

    An alias is a relation name (``customer``, ``sold_by_technician``); the
    trigger entity itself maps to the empty path under its own name. The
    entity behind an alias is ``path[-1].entity``. Where two paths reach the
    same alias the shorter one wins, so an appointment assignment reaches
    ``customer`` through ``job``.
    """
    paths: dict[str, tuple[Relation, ...]] = {name: ()}
    frontier = [name]
    while frontier:
        next_frontier: list[str] = []
        for alias in frontier:
            path = paths[alias]
            entity = ENTITIES[path[-1].entity if path else name]
            for relation in entity.relations:
                if relation.cardinality != "to_one" or relation.name in paths:
                    continue
                paths[relation.name] = path + (relation,)
                next_frontier.append(relation.name)
        frontier = next_frontier
    return paths
