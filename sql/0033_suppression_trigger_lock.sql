-- Serialize the contact triggers' writes to suppressions.
--
-- Customer and location contacts sync in concurrent transactions, and the
-- trigger of 0031 inserts one suppressions row per flagged phone number
-- in the order the batch happens to list them. Two batches that flag the
-- same two numbers in opposite orders each wait on the other's
-- uncommitted row: a deadlock, which Postgres resolves by rolling one
-- batch back. The trigger now takes a transaction-level advisory lock
-- before its first write, so one batch at a time writes 'servicetitan'
-- rows and the other waits for its commit instead. Batches that flag no
-- contact never take the lock.
--
-- Lock key: the first 8 bytes of sha256("rulesd suppressions") as a
-- signed bigint.
CREATE OR REPLACE FUNCTION rulesd_sync_contact_suppression() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    phone text;
BEGIN
    IF NEW.type NOT IN ('Phone', 'MobilePhone') THEN
        RETURN NULL;
    END IF;
    phone := rulesd_e164(coalesce(NEW.phone_number, NEW.value));
    IF phone IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.do_not_text IS TRUE THEN
        PERFORM pg_advisory_xact_lock(5091320849354445659);
        INSERT INTO suppressions (channel, address, source, reason)
        VALUES ('sms', phone, 'servicetitan', 'doNotText is set on the contact in ServiceTitan')
        ON CONFLICT DO NOTHING;
    ELSIF TG_OP = 'UPDATE' AND OLD.do_not_text IS TRUE THEN
        PERFORM pg_advisory_xact_lock(5091320849354445659);
        DELETE FROM suppressions AS s
        WHERE s.channel = 'sms' AND s.address = phone AND s.source = 'servicetitan'
          AND NOT EXISTS (
              SELECT 1 FROM st_customer_contacts AS c
              WHERE c.do_not_text IS TRUE AND rulesd_e164(coalesce(c.phone_number, c.value)) = phone)
          AND NOT EXISTS (
              SELECT 1 FROM st_location_contacts AS c
              WHERE c.do_not_text IS TRUE AND rulesd_e164(coalesce(c.phone_number, c.value)) = phone);
    END IF;
    RETURN NULL;
END
$$;
