-- Change capture with one trigger function per mirror table.
--
-- The shared function of 0002 turned both row versions into jsonb
-- documents and compared them key by key on every update. That cost
-- about 60 us per updated row on a 2-core VM, more than the upsert
-- itself, and it made incremental syncs and the daemon's event intake
-- slow. A function written for one table compares its columns directly
-- and converts only the columns that changed. The events are the same
-- as before: the same kinds, the same statuses, and in `changes` every
-- column except raw, synced_at and missing_since whose jsonb value
-- changed, as [old, new].
--
-- rulesd_install_capture(table, entity, status column) writes a table's
-- function from the columns the table has when it is called. A later
-- migration that adds or drops a column of a mirror table must call it
-- again for that table, or the new column's changes go unreported (a
-- test in tests/db compares the functions with the tables).

CREATE FUNCTION rulesd_install_capture(mirror regclass, entity text, status_column text) RETURNS void
LANGUAGE plpgsql AS $install$
DECLARE
    table_name text;
    function_name text;
    column_name text;
    checks text := '';
    old_status text := 'NULL';
    new_status text := 'NULL';
    status_kind text := '';
BEGIN
    SELECT relname INTO table_name FROM pg_class WHERE oid = mirror;
    function_name := 'rulesd_capture_' || table_name;

    FOR column_name IN
        SELECT attname FROM pg_attribute
        WHERE attrelid = mirror AND attnum > 0 AND NOT attisdropped AND attname NOT IN ('raw', 'synced_at')
        ORDER BY attnum
    LOOP
        checks := checks || format(
            E'    IF OLD.%1$I IS DISTINCT FROM NEW.%1$I THEN\n'
            || E'        diff := diff || jsonb_build_object(%2$L, jsonb_build_array(to_jsonb(OLD.%1$I), to_jsonb(NEW.%1$I)));\n'
            || E'    END IF;\n',
            column_name, column_name);
    END LOOP;

    IF status_column <> '' THEN
        -- The text of the jsonb value, as the shared function read it.
        old_status := format($$to_jsonb(OLD.%I) #>> '{}'$$, status_column);
        new_status := format($$to_jsonb(NEW.%I) #>> '{}'$$, status_column);
        status_kind := E'    ELSIF old_status IS DISTINCT FROM new_status THEN\n'
                       || E'        event_kind := ''status_changed'';\n';
    END IF;

    EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    diff jsonb := '{}'::jsonb;
    event_kind text;
    old_status text;
    new_status text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO workflow_events (entity, entity_id, kind, changes, status_to)
        VALUES (%2$L, NEW.id, 'created', '{}'::jsonb, %4$s);
        PERFORM pg_notify('rulesd_events', %2$L);
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO workflow_events (entity, entity_id, kind, status_from)
        VALUES (%2$L, OLD.id, 'deleted', %3$s);
        PERFORM pg_notify('rulesd_events', %2$L);
        RETURN NULL;
    END IF;
%5$s
    IF diff = '{}'::jsonb AND OLD.raw IS NOT DISTINCT FROM NEW.raw THEN
        RETURN NULL;
    END IF;
    old_status := %3$s;
    new_status := %4$s;
    IF OLD.missing_since IS NULL AND NEW.missing_since IS NOT NULL THEN
        event_kind := 'deleted';
%6$s    ELSE
        event_kind := 'updated';
    END IF;
    INSERT INTO workflow_events (entity, entity_id, kind, changes, status_from, status_to)
    VALUES (%2$L, NEW.id, event_kind, diff - 'missing_since', old_status, new_status);
    PERFORM pg_notify('rulesd_events', %2$L);
    RETURN NULL;
END;
$body$
$function$, function_name, entity, old_status, new_status, checks, status_kind);

    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', table_name || '_capture', mirror);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW'
        ' WHEN (current_setting(''rulesd.suppress_events'', true) IS DISTINCT FROM ''on'')'
        ' EXECUTE FUNCTION %I()',
        table_name || '_capture', mirror, function_name);
END;
$install$;

SELECT rulesd_install_capture('st_business_units', 'business_unit', '');
SELECT rulesd_install_capture('st_technicians', 'technician', '');
SELECT rulesd_install_capture('st_employees', 'employee', '');
SELECT rulesd_install_capture('st_job_types', 'job_type', '');
SELECT rulesd_install_capture('st_campaigns', 'campaign', '');
SELECT rulesd_install_capture('st_tag_types', 'tag_type', '');
SELECT rulesd_install_capture('st_customers', 'customer', '');
SELECT rulesd_install_capture('st_customer_contacts', 'customer_contact', '');
SELECT rulesd_install_capture('st_locations', 'location', '');
SELECT rulesd_install_capture('st_location_contacts', 'location_contact', '');
SELECT rulesd_install_capture('st_jobs', 'job', 'job_status');
SELECT rulesd_install_capture('st_appointments', 'appointment', 'status');
SELECT rulesd_install_capture('st_appointment_assignments', 'appointment_assignment', 'status');
SELECT rulesd_install_capture('st_estimates', 'estimate', 'status');
SELECT rulesd_install_capture('st_invoices', 'invoice', '');
SELECT rulesd_install_capture('st_payments', 'payment', '');
SELECT rulesd_install_capture('st_memberships', 'membership', 'status');

DROP FUNCTION rulesd_capture_change();
