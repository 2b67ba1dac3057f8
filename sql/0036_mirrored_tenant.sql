-- The ServiceTitan tenant this database mirrors. The first sync records
-- it, and every later sync compares its own tenant id with it. Without
-- the check, a mistyped SERVICE_TITAN_TENANT_ID or a database URL meant
-- for another tenant mixed two tenants' records in one mirror and fired
-- events for the other tenant's changes. The API URL is only shown in
-- the refusal message, because one tenant may be reached through
-- another URL.

CREATE TABLE st_tenant (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tenant_id bigint NOT NULL,
    api_url text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
