"""The demo's database: the embedded Postgres in its own data directory, emptied and migrated on every run."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from psycopg import sql

from rulesd.db import migrate
from rulesd.db.server import DatabaseServer, redact_url, start_embedded
from rulesd.engine.clock import ScaledClock
from rulesd.errors import DatabaseError

logger = logging.getLogger(__name__)

DEMO_DATA_DIR = Path(".rulesd/demo-pgdata")
# The comment on schema public marks a database the demo created, so a
# later run may empty it again.
DEMO_MARK = "rulesd demo database: rulesd demo empties it on every run"


def open_demo_database(database_url: str | None, data_dir: Path = DEMO_DATA_DIR) -> DatabaseServer:
    """Return the database the demo runs in: ``database_url``, else the embedded Postgres in ``data_dir``."""
    if database_url:
        return DatabaseServer(url=database_url)
    return start_embedded(data_dir)


def reset_database(url: str) -> list[str]:
    """Empty schema ``public`` of ``url``, apply every migration and return the names applied.

    Raise ``DatabaseError`` when the database already contains a synced
    mirror that an earlier demo did not create, so the demo never wipes a
    real tenant's mirror.
    """
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            _check_wipeable(conn, url)
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
            conn.execute(sql.SQL("COMMENT ON SCHEMA public IS {}").format(sql.Literal(DEMO_MARK)))
    except psycopg.Error as exc:
        raise DatabaseError(
            f"could not empty the demo database {redact_url(url)}: {exc}",
            hint="give --database-url a database that your user owns, or run rulesd demo without it",
        ) from exc
    return migrate.upgrade(url)


def _check_wipeable(conn: psycopg.Connection, url: str) -> None:
    row = conn.execute(
        "SELECT obj_description('public'::regnamespace, 'pg_namespace'), to_regclass('public.st_sync_log') IS NOT NULL"
    ).fetchone()
    comment, has_sync_log = row if row else (None, False)
    if comment == DEMO_MARK or not has_sync_log:
        return
    synced = conn.execute("SELECT EXISTS (SELECT 1 FROM st_sync_log)").fetchone()
    if synced and synced[0]:
        raise DatabaseError(
            f"the database {redact_url(url)} already contains a synced mirror, and the demo empties its database",
            hint="give rulesd demo an empty database, or run it without --database-url",
        )


def record_events_in_demo_time(url: str, clock: ScaledClock) -> None:
    """Make the demo database stamp each change event with demo time instead of its real commit time.

    The engine schedules a first step at the event's ``occurred_at`` plus
    the step's delay, and ignores events older than the rule's ``max_age``
    by demo time. Both need ``occurred_at`` in demo time. The trigger maps
    the database's real time through the same line as ``clock``: demo
    time is ``clock.start`` at ``clock.origin`` and runs ``clock.speed``
    times faster. It is created in the demo database only, never by a
    migration.
    """
    function = sql.SQL(
        """
        CREATE OR REPLACE FUNCTION rulesd_demo_event_time() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.occurred_at := {start}::timestamptz + (clock_timestamp() - {origin}::timestamptz) * {speed}::float8;
            RETURN NEW;
        END
        $$
        """
    ).format(
        start=sql.Literal(clock.start.isoformat()),
        origin=sql.Literal(clock.origin.isoformat()),
        speed=sql.Literal(clock.speed),
    )
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(function)
        conn.execute("DROP TRIGGER IF EXISTS rulesd_demo_event_time ON workflow_events")
        conn.execute(
            "CREATE TRIGGER rulesd_demo_event_time BEFORE INSERT ON workflow_events "
            "FOR EACH ROW EXECUTE FUNCTION rulesd_demo_event_time()"
        )
