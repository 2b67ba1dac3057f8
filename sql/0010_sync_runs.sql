-- Sync bookkeeping beyond st_sync_state's incremental cursor.
--
-- run_*: the initial or full read in progress for an entity, and how far
-- it got. Each batch commits together with run_cursor, so a sync killed
-- at any moment resumes at the last committed page. All four are null
-- when no such read is unfinished.
ALTER TABLE st_sync_state
    ADD COLUMN run_id uuid,
    ADD COLUMN run_kind text CHECK (run_kind IN ('initial', 'full')),
    ADD COLUMN run_cursor text,
    ADD COLUMN run_started_at timestamptz;

-- Ids returned so far by the unfinished full read of each entity. When the
-- read completes, mirror rows whose id is not here get missing_since set,
-- then the entity's rows here are deleted. A logged table on purpose: an
-- unlogged one is emptied by a server crash, and a resumed full read would
-- then mark every row returned before the crash as missing.
CREATE TABLE st_sync_seen (
    entity text NOT NULL,
    id bigint NOT NULL,
    PRIMARY KEY (entity, id)
);

-- The scheduler's memory: one row per kind of scheduled sync. last_slot_at
-- is the scheduled time last run (the cron slot for full syncs), so a
-- restart neither repeats a slot already run nor skips one that was missed.
CREATE TABLE st_sync_schedule (
    kind text PRIMARY KEY CHECK (kind IN ('incremental', 'full')),
    last_slot_at timestamptz,
    last_started_at timestamptz,
    last_finished_at timestamptz,
    last_status text CHECK (last_status IN ('running', 'succeeded', 'failed')),
    last_run_id uuid,
    last_error text
);
