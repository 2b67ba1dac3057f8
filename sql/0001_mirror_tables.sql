-- Mirror tables: one st_<entity> per catalog entity, the sync bookkeeping tables.
-- Typed columns follow rulesd/servicetitan/catalog.py; every non-key column is
-- nullable because ServiceTitan does not honour its own spec's nullability.
-- No foreign keys: a record may reference one that arrives in a later page.

CREATE TABLE st_business_units (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    name text,
    official_name text,
    email text,
    phone_number text,
    trade_name text,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_business_units_modified_on_idx ON st_business_units (modified_on);

CREATE TABLE st_technicians (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    user_id bigint,
    name text,
    first_name text,
    email text,
    phone_number text,
    mobile_phone text,
    business_unit_id bigint,
    status text,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_technicians_modified_on_idx ON st_technicians (modified_on);
CREATE INDEX st_technicians_business_unit_id_idx ON st_technicians (business_unit_id);

CREATE TABLE st_employees (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    user_id bigint,
    name text,
    email text,
    phone_number text,
    role text,
    business_unit_id bigint,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_employees_modified_on_idx ON st_employees (modified_on);
CREATE INDEX st_employees_business_unit_id_idx ON st_employees (business_unit_id);

CREATE TABLE st_job_types (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    name text,
    priority text,
    duration bigint,
    sold_threshold numeric,
    job_class text,
    no_charge boolean,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_job_types_modified_on_idx ON st_job_types (modified_on);

CREATE TABLE st_campaigns (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    name text,
    category_name text,
    source text,
    medium text,
    is_default_campaign boolean,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_campaigns_modified_on_idx ON st_campaigns (modified_on);

CREATE TABLE st_tag_types (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    name text,
    code text,
    color text,
    importance text,
    is_conversion_opportunity boolean,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_tag_types_modified_on_idx ON st_tag_types (modified_on);

CREATE TABLE st_customers (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    name text,
    type text,
    balance numeric,
    tax_exempt boolean,
    do_not_mail boolean,
    do_not_service boolean,
    national_account boolean,
    merged_to_id bigint,
    created_by_id bigint,
    credit_limit numeric,
    address_street text,
    address_unit text,
    address_city text,
    address_state text,
    address_zip text,
    address_country text,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_customers_modified_on_idx ON st_customers (modified_on);

CREATE TABLE st_customer_contacts (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    customer_id bigint,
    type text,
    value text,
    memo text,
    phone_number text,
    do_not_text boolean,
    job_reminders_enabled boolean,
    marketing_updates_enabled boolean,
    invoice_notification boolean,
    statement_notification boolean,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_customer_contacts_modified_on_idx ON st_customer_contacts (modified_on);
CREATE INDEX st_customer_contacts_customer_id_idx ON st_customer_contacts (customer_id);

CREATE TABLE st_locations (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    customer_id bigint,
    name text,
    zone_id bigint,
    tax_zone_id bigint,
    tax_exempt boolean,
    merged_to_id bigint,
    address_street text,
    address_unit text,
    address_city text,
    address_state text,
    address_zip text,
    address_country text,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_locations_modified_on_idx ON st_locations (modified_on);
CREATE INDEX st_locations_customer_id_idx ON st_locations (customer_id);

CREATE TABLE st_location_contacts (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    location_id bigint,
    type text,
    value text,
    memo text,
    phone_number text,
    do_not_text boolean,
    job_reminders_enabled boolean,
    marketing_updates_enabled boolean,
    invoice_notification boolean,
    statement_notification boolean,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_location_contacts_modified_on_idx ON st_location_contacts (modified_on);
CREATE INDEX st_location_contacts_location_id_idx ON st_location_contacts (location_id);

CREATE TABLE st_jobs (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    job_number text,
    customer_id bigint,
    location_id bigint,
    job_status text,
    completed_on timestamptz,
    business_unit_id bigint,
    job_type_id bigint,
    priority text,
    campaign_id bigint,
    project_id bigint,
    appointment_count bigint,
    first_appointment_id bigint,
    last_appointment_id bigint,
    recall_for_id bigint,
    warranty_id bigint,
    no_charge boolean,
    notifications_enabled boolean,
    sold_by_id bigint,
    invoice_id bigint,
    membership_id bigint,
    created_from_estimate_id bigint,
    total numeric,
    summary text,
    customer_po text,
    created_by_id bigint,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_jobs_modified_on_idx ON st_jobs (modified_on);
CREATE INDEX st_jobs_customer_id_idx ON st_jobs (customer_id);
CREATE INDEX st_jobs_location_id_idx ON st_jobs (location_id);
CREATE INDEX st_jobs_business_unit_id_idx ON st_jobs (business_unit_id);
CREATE INDEX st_jobs_job_type_id_idx ON st_jobs (job_type_id);
CREATE INDEX st_jobs_campaign_id_idx ON st_jobs (campaign_id);
CREATE INDEX st_jobs_job_status_idx ON st_jobs (job_status);

CREATE TABLE st_appointments (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    job_id bigint,
    customer_id bigint,
    appointment_number text,
    starts_at timestamptz,
    ends_at timestamptz,
    arrival_window_start timestamptz,
    arrival_window_end timestamptz,
    status text,
    special_instructions text,
    is_confirmed boolean,
    unused boolean,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_appointments_modified_on_idx ON st_appointments (modified_on);
CREATE INDEX st_appointments_job_id_idx ON st_appointments (job_id);
CREATE INDEX st_appointments_customer_id_idx ON st_appointments (customer_id);
CREATE INDEX st_appointments_status_idx ON st_appointments (status);

CREATE TABLE st_appointment_assignments (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    technician_id bigint,
    technician_name text,
    assigned_by_id bigint,
    assigned_on timestamptz,
    status text,
    is_paused boolean,
    job_id bigint,
    appointment_id bigint,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_appointment_assignments_modified_on_idx ON st_appointment_assignments (modified_on);
CREATE INDEX st_appointment_assignments_technician_id_idx ON st_appointment_assignments (technician_id);
CREATE INDEX st_appointment_assignments_job_id_idx ON st_appointment_assignments (job_id);
CREATE INDEX st_appointment_assignments_appointment_id_idx ON st_appointment_assignments (appointment_id);
CREATE INDEX st_appointment_assignments_status_idx ON st_appointment_assignments (status);

CREATE TABLE st_estimates (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    job_id bigint,
    project_id bigint,
    location_id bigint,
    customer_id bigint,
    name text,
    job_number text,
    status text,
    status_value integer,
    review_status text,
    summary text,
    sold_on timestamptz,
    sold_by bigint,
    subtotal numeric,
    tax numeric,
    total numeric GENERATED ALWAYS AS (coalesce(subtotal, 0) + coalesce(tax, 0)) STORED,
    business_unit_id bigint,
    business_unit_name text,
    is_recommended boolean,
    is_change_order boolean,
    deposit_amount numeric,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_estimates_modified_on_idx ON st_estimates (modified_on);
CREATE INDEX st_estimates_job_id_idx ON st_estimates (job_id);
CREATE INDEX st_estimates_customer_id_idx ON st_estimates (customer_id);
CREATE INDEX st_estimates_location_id_idx ON st_estimates (location_id);
CREATE INDEX st_estimates_business_unit_id_idx ON st_estimates (business_unit_id);
CREATE INDEX st_estimates_sold_by_idx ON st_estimates (sold_by);
CREATE INDEX st_estimates_status_idx ON st_estimates (status);

CREATE TABLE st_invoices (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    reference_number text,
    invoice_date timestamptz,
    due_date timestamptz,
    sub_total numeric,
    sales_tax numeric,
    total numeric,
    balance numeric,
    discount_total numeric,
    customer_id bigint,
    location_id bigint,
    business_unit_id bigint,
    job_id bigint,
    job_number text,
    project_id bigint,
    sync_status text,
    sent_status text,
    review_status text,
    paid_on timestamptz,
    membership_id bigint,
    invoice_type text,
    adjustment_to_id bigint,
    summary text,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_invoices_modified_on_idx ON st_invoices (modified_on);
CREATE INDEX st_invoices_customer_id_idx ON st_invoices (customer_id);
CREATE INDEX st_invoices_location_id_idx ON st_invoices (location_id);
CREATE INDEX st_invoices_job_id_idx ON st_invoices (job_id);
CREATE INDEX st_invoices_business_unit_id_idx ON st_invoices (business_unit_id);

CREATE TABLE st_payments (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    customer_id bigint,
    business_unit_id bigint,
    total numeric,
    unapplied_amount numeric,
    type text,
    type_id text,
    paid_on timestamptz,
    reference_number text,
    memo text,
    refunded_payment_id bigint,
    sync_status text,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_payments_modified_on_idx ON st_payments (modified_on);
CREATE INDEX st_payments_customer_id_idx ON st_payments (customer_id);
CREATE INDEX st_payments_business_unit_id_idx ON st_payments (business_unit_id);

CREATE TABLE st_memberships (
    id bigint PRIMARY KEY,
    active boolean,
    created_on timestamptz,
    modified_on timestamptz,
    customer_id bigint,
    location_id bigint,
    business_unit_id bigint,
    membership_type_id bigint,
    status text,
    follow_up_status text,
    starts_on timestamptz,
    ends_on timestamptz,
    billing_frequency text,
    duration integer,
    cancellation_date timestamptz,
    next_scheduled_bill_date timestamptz,
    follow_up_on timestamptz,
    sold_by_id bigint,
    memo text,
    raw jsonb NOT NULL,
    synced_at timestamptz NOT NULL DEFAULT now(),
    missing_since timestamptz
);
CREATE INDEX st_memberships_modified_on_idx ON st_memberships (modified_on);
CREATE INDEX st_memberships_customer_id_idx ON st_memberships (customer_id);
CREATE INDEX st_memberships_location_id_idx ON st_memberships (location_id);
CREATE INDEX st_memberships_business_unit_id_idx ON st_memberships (business_unit_id);
CREATE INDEX st_memberships_status_idx ON st_memberships (status);

-- One row per entity per sync run.
CREATE TABLE st_sync_log (
    id bigserial PRIMARY KEY,
    run_id uuid NOT NULL,
    entity text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('initial', 'incremental', 'full')),
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    fetched integer NOT NULL DEFAULT 0,
    created integer NOT NULL DEFAULT 0,
    updated integer NOT NULL DEFAULT 0,
    unchanged integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    error text,
    watermark text
);
CREATE INDEX st_sync_log_entity_started_idx ON st_sync_log (entity, started_at DESC);
CREATE INDEX st_sync_log_run_idx ON st_sync_log (run_id);

-- Where each entity's next incremental sync starts: a modifiedOn watermark
-- for list endpoints, an export continuation token for export feeds.
CREATE TABLE st_sync_state (
    entity text PRIMARY KEY,
    watermark timestamptz,
    continue_from text,
    last_kind text,
    last_started_at timestamptz,
    last_finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
