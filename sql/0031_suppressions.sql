-- Addresses that must never be messaged on a channel.
--
-- Sources: 'servicetitan' (a contact's doNotText flag, kept in step by the
-- triggers below), 'provider' (an opt-out error such as Twilio's 21610) and
-- 'manual' (`rulesd contacts suppress`). Phone numbers are stored in E.164
-- form (+15551234567), e-mail addresses in lower case.
CREATE TABLE suppressions (
    channel text NOT NULL CHECK (channel IN ('sms', 'email')),
    address text NOT NULL,
    source text NOT NULL CHECK (source IN ('servicetitan', 'provider', 'manual')),
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, address, source)
);

-- Normalize a phone number to E.164 with the North American default the
-- agent's Python code uses: 10 digits get +1, 11 digits starting with 1
-- get +, anything else keeps its digits behind a +. Returns NULL for text
-- with no digits.
CREATE FUNCTION rulesd_e164(raw text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN digits = '' THEN NULL
        WHEN length(digits) = 10 THEN '+1' || digits
        WHEN length(digits) = 11 AND left(digits, 1) = '1' THEN '+' || digits
        ELSE '+' || digits
    END
    FROM (SELECT regexp_replace(coalesce(raw, ''), '\D', '', 'g') AS digits) AS cleaned
$$;

-- Mirror a contact's doNotText flag into suppressions. Clearing the flag
-- removes the 'servicetitan' row only while no other contact row still
-- carries the flag for the same number; manual and provider rows stay.
CREATE FUNCTION rulesd_sync_contact_suppression() RETURNS trigger
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
        INSERT INTO suppressions (channel, address, source, reason)
        VALUES ('sms', phone, 'servicetitan', 'doNotText is set on the contact in ServiceTitan')
        ON CONFLICT DO NOTHING;
    ELSIF TG_OP = 'UPDATE' AND OLD.do_not_text IS TRUE THEN
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

CREATE TRIGGER st_customer_contacts_suppression
    AFTER INSERT OR UPDATE OF do_not_text, value, phone_number ON st_customer_contacts
    FOR EACH ROW EXECUTE FUNCTION rulesd_sync_contact_suppression();

CREATE TRIGGER st_location_contacts_suppression
    AFTER INSERT OR UPDATE OF do_not_text, value, phone_number ON st_location_contacts
    FOR EACH ROW EXECUTE FUNCTION rulesd_sync_contact_suppression();

-- Contacts mirrored before this migration.
INSERT INTO suppressions (channel, address, source, reason)
SELECT DISTINCT 'sms', rulesd_e164(coalesce(phone_number, value)), 'servicetitan',
       'doNotText is set on the contact in ServiceTitan'
FROM (
    SELECT type, phone_number, value, do_not_text FROM st_customer_contacts
    UNION ALL
    SELECT type, phone_number, value, do_not_text FROM st_location_contacts
) AS contacts
WHERE do_not_text IS TRUE AND type IN ('Phone', 'MobilePhone')
  AND rulesd_e164(coalesce(phone_number, value)) IS NOT NULL
ON CONFLICT DO NOTHING;
