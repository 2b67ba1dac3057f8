-- The action ledger: one row per message the agent intended to send.
--
-- A row is written and committed with status 'pending' before the provider
-- is called, and updated with the provider's id and outcome after. A row
-- left 'pending' by a process that died in between is marked 'unknown' by
-- the next attempt and is never re-sent automatically.
--
-- status: pending (written, provider not yet answered), sent, failed (the
-- provider rejected it, nothing was delivered), unknown (the outcome was
-- lost), dry_run (drafted, no provider called), refused (a guard rejected
-- the recipient or the message).
CREATE TABLE action_ledger (
    id bigserial PRIMARY KEY,
    instance_id bigint NOT NULL,
    step_run_id bigint,
    attempt integer,
    rule_id text NOT NULL,
    step_name text NOT NULL,
    channel text NOT NULL CHECK (channel IN ('sms', 'email')),
    recipient text NOT NULL,
    customer_id bigint,
    location_id bigint,
    status text NOT NULL
        CHECK (status IN ('pending', 'sent', 'failed', 'unknown', 'dry_run', 'refused')),
    provider text,
    provider_id text,
    error text,
    body text,
    subject text,
    created_at timestamptz NOT NULL,
    sent_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance_id, step_name, channel, recipient)
);

-- At most one message per channel per step, whatever the recipient: a retry
-- that picked another contact must not send a second message.
CREATE UNIQUE INDEX action_ledger_one_per_channel
    ON action_ledger (instance_id, step_name, channel)
    WHERE status IN ('pending', 'sent', 'unknown', 'dry_run');

-- Frequency caps count a customer's recent messages across all rules.
CREATE INDEX action_ledger_customer_recent
    ON action_ledger (customer_id, channel, created_at)
    WHERE status IN ('pending', 'sent', 'unknown', 'dry_run');

-- `rulesd status` lists rows a person has to check.
CREATE INDEX action_ledger_unknown ON action_ledger (created_at) WHERE status = 'unknown';
