"""Compare row-level triggers with statement-level triggers on transition tables.

Loads 100,000 estimates with one INSERT … ON CONFLICT upsert, then changes
the status of all of them with a second upsert, under three set-ups: no
capture trigger, rulesd's row-level trigger (sql/0002), and a
statement-level variant that reads transition tables. Prints seconds per
upsert and events written.

    python benchmarks/change_capture_bench.py [--database-url URL] [--rows N]

Without a URL it starts an embedded Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from rulesd.db import migrate
from rulesd.db.server import start_embedded

STATEMENT_LEVEL = """
DROP TRIGGER st_estimates_capture ON st_estimates;

CREATE FUNCTION bench_capture_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO workflow_events (entity, entity_id, kind, status_to)
    SELECT 'estimate', n.id, 'created', n.status FROM new_rows n;
    PERFORM pg_notify('rulesd_events', 'estimate');
    RETURN NULL;
END $$;

CREATE FUNCTION bench_capture_updates() RETURNS trigger LANGUAGE plpgsql
-- Transition tables have no statistics, so the planner would pick a nested
-- loop for the old/new join: quadratic in the batch size.
SET enable_nestloop = off
AS $$
BEGIN
    INSERT INTO workflow_events (entity, entity_id, kind, changes, status_from, status_to)
    WITH o AS MATERIALIZED (
        SELECT id, status, raw, to_jsonb(old_rows) - 'raw' - 'synced_at' AS doc FROM old_rows
    ), n AS MATERIALIZED (
        SELECT id, status, raw, to_jsonb(new_rows) - 'raw' - 'synced_at' AS doc FROM new_rows
    ), d AS (
        SELECT n.id, o.status AS old_status, n.status AS new_status,
               (SELECT coalesce(jsonb_object_agg(k, jsonb_build_array(o.doc -> k, n.doc -> k)), '{}'::jsonb)
                  FROM jsonb_object_keys(n.doc) AS k
                 WHERE (o.doc -> k) IS DISTINCT FROM (n.doc -> k)) AS diff,
               o.raw IS DISTINCT FROM n.raw AS raw_changed
        FROM o JOIN n ON o.id = n.id
    )
    SELECT 'estimate', d.id,
           CASE WHEN d.old_status IS DISTINCT FROM d.new_status THEN 'status_changed' ELSE 'updated' END,
           d.diff, d.old_status, d.new_status
    FROM d
    WHERE d.diff <> '{}'::jsonb OR d.raw_changed;
    PERFORM pg_notify('rulesd_events', 'estimate');
    RETURN NULL;
END $$;

CREATE TRIGGER bench_ins AFTER INSERT ON st_estimates REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION bench_capture_inserts();
CREATE TRIGGER bench_upd AFTER UPDATE ON st_estimates REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT WHEN (current_setting('rulesd.suppress_events', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION bench_capture_updates();
"""

UPSERT = """
INSERT INTO st_estimates (id, status, subtotal, customer_id, raw)
SELECT g, %(status)s::text, 100 + g %% 900, g %% 5000, jsonb_build_object('id', g, 'status', %(status)s::text)
FROM generate_series(1, %(rows)s) AS g
ON CONFLICT (id) DO UPDATE SET status = excluded.status, subtotal = excluded.subtotal,
    customer_id = excluded.customer_id, raw = excluded.raw, synced_at = now()
WHERE st_estimates.raw IS DISTINCT FROM excluded.raw
"""


def run_variant(server_url: str, variant: str, rows: int) -> dict[str, float | int | str]:
    name = f"rulesd_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        migrate.upgrade(url)
        with psycopg.connect(url) as conn:
            if variant == "none":
                conn.execute("DROP TRIGGER st_estimates_capture ON st_estimates")
            elif variant == "statement":
                conn.execute(STATEMENT_LEVEL)
            conn.commit()

            started = time.perf_counter()
            conn.execute(UPSERT, {"status": "Open", "rows": rows})
            conn.commit()
            insert_seconds = time.perf_counter() - started

            started = time.perf_counter()
            conn.execute(UPSERT, {"status": "Sold", "rows": rows})
            conn.commit()
            update_seconds = time.perf_counter() - started

            started = time.perf_counter()
            conn.execute(UPSERT, {"status": "Sold", "rows": rows})
            conn.commit()
            noop_seconds = time.perf_counter() - started

            events = conn.execute("SELECT count(*) FROM workflow_events").fetchone()[0]
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return {
        "variant": variant,
        "insert_s": round(insert_seconds, 2),
        "update_s": round(update_seconds, 2),
        "noop_s": round(noop_seconds, 2),
        "events": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="server to create scratch databases on")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    temp_dir = None
    server = None
    server_url = args.database_url
    if not server_url:
        temp_dir = Path(tempfile.mkdtemp(prefix="rulesd-bench-"))
        server = start_embedded(temp_dir / "pgdata")
        server_url = make_conninfo(server.url, dbname="postgres")
    try:
        for variant in ("none", "row", "statement"):
            print(json.dumps(run_variant(server_url, variant, args.rows)))
    finally:
        if server:
            server.close()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
