-- Make rulesd_e164 give the same answer as the agent's normalize_phone
-- (rulesd/agent/addresses.py), so a doNotText suppression is stored under
-- the address the recipient guard compares. The 0031 version accepted any
-- text and guessed: "+64 9 123 4567" (New Zealand) became +16491234567,
-- and "512-555-0101 x23" became +512555010123. Such values now give null:
-- text other than digits and phone punctuation, fewer than 7 or more than
-- 15 digits, or a leading + with exactly 10 digits.
CREATE OR REPLACE FUNCTION rulesd_e164(raw text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN coalesce(raw, '') !~ '^[ \t\n\r\f\v]*\+?[0-9 \t\n\r\f\v().\-/]*[ \t\n\r\f\v]*$' THEN NULL
        WHEN length(digits) < 7 OR length(digits) > 15 THEN NULL
        WHEN length(digits) = 10 AND ltrim(raw, E' \t\n\r\f\v') LIKE '+%' THEN NULL
        WHEN length(digits) = 10 THEN '+1' || digits
        ELSE '+' || digits
    END
    FROM (SELECT regexp_replace(coalesce(raw, ''), '[^0-9]', '', 'g') AS digits) AS cleaned
$$;

-- Rebuild the rows the contact trigger owns under the new addresses.
DELETE FROM suppressions WHERE source = 'servicetitan';
INSERT INTO suppressions (channel, address, source, reason)
SELECT DISTINCT 'sms', rulesd_e164(coalesce(c.phone_number, c.value)), 'servicetitan',
       'doNotText is set on the contact in ServiceTitan'
  FROM (
        SELECT type, phone_number, value, do_not_text FROM st_customer_contacts
        UNION ALL
        SELECT type, phone_number, value, do_not_text FROM st_location_contacts
       ) AS c
 WHERE c.type IN ('Phone', 'MobilePhone') AND c.do_not_text IS TRUE
   AND rulesd_e164(coalesce(c.phone_number, c.value)) IS NOT NULL
ON CONFLICT DO NOTHING;
