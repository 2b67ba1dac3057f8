-- Workflow engine state: rule versions, enrollments, step runs and rule pauses.
--
-- All times are timestamptz. The engine compares due times with a value
-- from its clock: the database's now() in production, a fake time in
-- scenario tests.

-- Every rule version the daemon has loaded, keyed by the sha256 of its file.
CREATE TABLE workflow_definitions (
    rule_id text NOT NULL,
    version text NOT NULL,
    path text,
    source text NOT NULL,
    first_loaded_at timestamptz NOT NULL DEFAULT now(),
    last_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, version)
);

-- Rules paused by the flood guard (or by hand). A row with paused_at set
-- is paused until `rulesd rules resume ID` clears it.
CREATE TABLE workflow_rule_state (
    rule_id text PRIMARY KEY,
    paused_at timestamptz,
    paused_reason text,
    resumed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One enrollment: one record's run through one rule.
--
-- next_run_at is when the engine next has to look at the enrollment: the
-- current step's due time, or, while a daemon holds the lease, the lease
-- expiry. A daemon that dies mid-step therefore leaves a row that becomes
-- due again when its lease expires, and one index serves both cases.
-- lease_token grows by one on every claim; write-backs are fenced on it.
CREATE TABLE workflow_instances (
    id bigserial PRIMARY KEY,
    rule_id text NOT NULL,
    rule_version text NOT NULL,
    entity text NOT NULL,
    entity_id bigint NOT NULL,
    enrollment_key text NOT NULL,
    event_id bigint,
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'completed', 'stopped', 'failed', 'cancelled')),
    current_step text,
    step_index integer NOT NULL DEFAULT 0,
    attempt integer NOT NULL DEFAULT 0,
    next_run_at timestamptz,
    lease_owner uuid,
    lease_expires_at timestamptz,
    lease_token bigint NOT NULL DEFAULT 0,
    customer_id bigint,
    location_id bigint,
    stop_reason text,
    error text,
    enrolled_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz
);

-- One active enrollment per rule and key. on_retrigger: parallel appends
-- the enrolling event's id to the key, so each event gets its own.
CREATE UNIQUE INDEX workflow_instances_one_active
    ON workflow_instances (rule_id, enrollment_key) WHERE status = 'active';

-- The due-step query: ORDER BY next_run_at over active rows only.
CREATE INDEX workflow_instances_due
    ON workflow_instances (next_run_at) WHERE status = 'active';

-- Stop conditions and `rulesd explain` look enrollments up by record.
CREATE INDEX workflow_instances_entity ON workflow_instances (entity, entity_id);

-- The flood guard counts a rule's enrollments of the last hour.
CREATE INDEX workflow_instances_rule_enrolled ON workflow_instances (rule_id, enrolled_at);

-- One row per look at a step: runs, skips, deferrals and stops, with the
-- executor's transcript and token usage.
CREATE TABLE workflow_step_runs (
    id bigserial PRIMARY KEY,
    instance_id bigint NOT NULL REFERENCES workflow_instances (id) ON DELETE CASCADE,
    rule_id text NOT NULL,
    rule_version text NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    lease_token bigint NOT NULL,
    lease_owner uuid,
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'done', 'skipped', 'deferred', 'failed', 'transient',
                          'abandoned')),
    action text,
    detail text,
    defer_until timestamptz,
    lease_lost boolean NOT NULL DEFAULT false,
    dry_run boolean NOT NULL DEFAULT false,
    transcript jsonb NOT NULL DEFAULT '[]',
    usage jsonb NOT NULL DEFAULT '{}',
    due_at timestamptz,
    started_at timestamptz NOT NULL,
    finished_at timestamptz
);

CREATE INDEX workflow_step_runs_instance ON workflow_step_runs (instance_id, id);
CREATE INDEX workflow_step_runs_failed ON workflow_step_runs (finished_at) WHERE status IN ('failed', 'transient');

-- One row per daemon process start, so `rulesd status` (another process)
-- can show each daemon's listener state. heartbeat_at is refreshed while
-- the daemon runs; stopped_at is set on a clean exit.
CREATE TABLE workflow_daemons (
    owner uuid PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    listener_state text NOT NULL DEFAULT 'starting',
    listener_changed_at timestamptz NOT NULL DEFAULT now(),
    rules_loaded integer NOT NULL DEFAULT 0,
    stopped_at timestamptz
);
