-- Change capture: every real change to a mirror table becomes one
-- workflow_events row, and a NOTIFY on channel rulesd_events wakes the
-- daemon. The table is the queue; the notification is only a wake-up, so
-- its payload is the entity name (Postgres folds identical payloads sent
-- in one transaction into one, which keeps a large sync from flooding the
-- notification queue).
--
-- History loads (initial and full syncs) run
--     SELECT set_config('rulesd.suppress_events', 'on', true)
-- in their transactions; the triggers' WHEN clause then skips the call.

CREATE TABLE workflow_events (
    id bigserial PRIMARY KEY,
    entity text NOT NULL,
    entity_id bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('created', 'updated', 'status_changed', 'deleted')),
    changes jsonb NOT NULL DEFAULT '{}'::jsonb,
    status_from text,
    status_to text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX workflow_events_unprocessed_idx ON workflow_events (id) WHERE processed_at IS NULL;
CREATE INDEX workflow_events_entity_idx ON workflow_events (entity, entity_id);

-- TG_ARGV[0]: catalog entity name; TG_ARGV[1]: status column or ''.
CREATE FUNCTION rulesd_capture_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_doc jsonb;
    new_doc jsonb;
    diff jsonb := '{}'::jsonb;
    key text;
    event_kind text;
    status_column text := TG_ARGV[1];
    old_status text;
    new_status text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        new_doc := to_jsonb(NEW) - 'raw' - 'synced_at' - 'missing_since';
        IF status_column <> '' THEN
            new_status := new_doc ->> status_column;
        END IF;
        INSERT INTO workflow_events (entity, entity_id, kind, changes, status_to)
        VALUES (TG_ARGV[0], NEW.id, 'created', '{}'::jsonb, new_status);
    ELSIF TG_OP = 'DELETE' THEN
        IF status_column <> '' THEN
            old_status := to_jsonb(OLD) ->> status_column;
        END IF;
        INSERT INTO workflow_events (entity, entity_id, kind, status_from)
        VALUES (TG_ARGV[0], OLD.id, 'deleted', old_status);
    ELSE
        old_doc := to_jsonb(OLD) - 'raw' - 'synced_at';
        new_doc := to_jsonb(NEW) - 'raw' - 'synced_at';
        FOR key IN SELECT jsonb_object_keys(new_doc) LOOP
            IF (old_doc -> key) IS DISTINCT FROM (new_doc -> key) THEN
                diff := diff || jsonb_build_object(key, jsonb_build_array(old_doc -> key, new_doc -> key));
            END IF;
        END LOOP;
        IF diff = '{}'::jsonb AND OLD.raw IS NOT DISTINCT FROM NEW.raw THEN
            RETURN NULL;
        END IF;
        IF status_column <> '' THEN
            old_status := old_doc ->> status_column;
            new_status := new_doc ->> status_column;
        END IF;
        IF OLD.missing_since IS NULL AND NEW.missing_since IS NOT NULL THEN
            event_kind := 'deleted';
        ELSIF status_column <> '' AND old_status IS DISTINCT FROM new_status THEN
            event_kind := 'status_changed';
        ELSE
            event_kind := 'updated';
        END IF;
        INSERT INTO workflow_events (entity, entity_id, kind, changes, status_from, status_to)
        VALUES (TG_ARGV[0], NEW.id, event_kind, diff - 'missing_since', old_status, new_status);
    END IF;
    PERFORM pg_notify('rulesd_events', TG_ARGV[0]);
    RETURN NULL;
END;
$$;

CREATE TRIGGER st_business_units_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_business_units
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('business_unit', '');

CREATE TRIGGER st_technicians_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_technicians
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('technician', '');

CREATE TRIGGER st_employees_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_employees
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('employee', '');

CREATE TRIGGER st_job_types_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_job_types
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('job_type', '');

CREATE TRIGGER st_campaigns_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_campaigns
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('campaign', '');

CREATE TRIGGER st_tag_types_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_tag_types
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('tag_type', '');

CREATE TRIGGER st_customers_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_customers
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('customer', '');

CREATE TRIGGER st_customer_contacts_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_customer_contacts
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('customer_contact', '');

CREATE TRIGGER st_locations_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_locations
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('location', '');

CREATE TRIGGER st_location_contacts_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_location_contacts
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('location_contact', '');

CREATE TRIGGER st_jobs_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_jobs
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('job', 'job_status');

CREATE TRIGGER st_appointments_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_appointments
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('appointment', 'status');

CREATE TRIGGER st_appointment_assignments_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_appointment_assignments
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('appointment_assignment', 'status');

CREATE TRIGGER st_estimates_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_estimates
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('estimate', 'status');

CREATE TRIGGER st_invoices_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_invoices
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('invoice', '');

CREATE TRIGGER st_payments_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_payments
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('payment', '');

CREATE TRIGGER st_memberships_capture
    AFTER INSERT OR UPDATE OR DELETE ON st_memberships
    FOR EACH ROW
    WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION rulesd_capture_change('membership', 'status');
