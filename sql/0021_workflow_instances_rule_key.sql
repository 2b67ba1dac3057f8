-- enroll.once asks whether a rule ever enrolled a key, whatever the
-- enrollment's status; the unique index on active enrollments cannot
-- answer that, so without this index the check reads a rule's whole history.
CREATE INDEX workflow_instances_rule_key ON workflow_instances (rule_id, enrollment_key);
