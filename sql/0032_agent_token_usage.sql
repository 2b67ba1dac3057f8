-- Token usage of every model call the agent makes, for the daily token
-- budget and for cost reports. Token counts are the API's usage fields.
CREATE TABLE agent_token_usage (
    id bigserial PRIMARY KEY,
    instance_id bigint,
    step_run_id bigint,
    rule_id text,
    step_name text,
    model text NOT NULL,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    cache_creation_input_tokens integer NOT NULL DEFAULT 0,
    cache_read_input_tokens integer NOT NULL DEFAULT 0,
    called_at timestamptz NOT NULL
);

CREATE INDEX agent_token_usage_called_at ON agent_token_usage (called_at);
