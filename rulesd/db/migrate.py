"""Numbered SQL migrations: apply pending ones in order, and report which are applied.

Migrations are ``sql/NNNN_name.sql``. Each is applied in its own
transaction and recorded in ``rulesd_migrations`` with a SHA-256 of its
text. A session advisory lock serializes upgrades, so two processes
starting at once apply each migration once. A migration that changed after
it was applied is an error naming the file: migrations are append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import psycopg

from rulesd.db.connect import connect
from rulesd.errors import MigrationError
from rulesd.resources import sql_dir

logger = logging.getLogger(__name__)

# pg_advisory_lock key: the first 8 bytes of sha256("rulesd migrations") as a signed bigint.
MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(b"rulesd migrations").digest()[:8], "big", signed=True)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS rulesd_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

MigrationState = Literal["applied", "pending", "changed", "unknown"]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    state: MigrationState
    applied_at: datetime | None


def discover(directory: Path | None = None) -> list[Migration]:
    """Return the migration files in ``directory`` (default: rulesd's own) in version order."""
    directory = directory or sql_dir()
    migrations: list[Migration] = []
    seen: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"migration file name {path.name} is invalid",
                hint="name migrations NNNN_lowercase_words.sql, for example 0042_add_index.sql",
            )
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(f"migrations {seen[version].name} and {path.name} share version {version}")
        seen[version] = path
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations.append(Migration(version, match.group(2), path, checksum))
    return migrations


def upgrade(url: str, directory: Path | None = None) -> list[str]:
    """Apply every pending migration; return the file names applied (empty when up to date)."""
    migrations = discover(directory)
    applied_names: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(_CREATE_TABLE)
            applied = _applied(conn)
            _check_applied(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                _apply(conn, migration)
                applied_names.append(migration.path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_names


def status(url: str, directory: Path | None = None) -> list[MigrationStatus]:
    """Return every known and applied migration with its state."""
    migrations = discover(directory)
    with connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('rulesd_migrations') IS NOT NULL").fetchone()
        rows = conn.execute("SELECT version, name, checksum, applied_at FROM rulesd_migrations").fetchall() if exists and exists[0] else []
    applied = {row[0]: row for row in rows}
    result: list[MigrationStatus] = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
        if row is None:
            result.append(MigrationStatus(migration.version, migration.name, "pending", None))
        elif row[2] != migration.checksum:
            result.append(MigrationStatus(migration.version, migration.name, "changed", row[3]))
        else:
            result.append(MigrationStatus(migration.version, migration.name, "applied", row[3]))
    for version, row in sorted(applied.items()):
        result.append(MigrationStatus(version, row[1], "unknown", row[3]))
    return result


def pending(url: str, directory: Path | None = None) -> list[str]:
    """Return the names of migrations not yet applied."""
    return [f"{s.version:04d}_{s.name}.sql" for s in status(url, directory) if s.state == "pending"]


def _applied(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT version, name, checksum FROM rulesd_migrations").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def _check_applied(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    known = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{name}.sql, which this rulesd does not have",
                hint="upgrade rulesd to the version that created this database",
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.path.name} changed after it was applied",
                hint="restore the file as it was; put a schema change in a new migration file",
            )


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    logger.info("applying migration %s", migration.path.name, extra={"event": "migration_applying"})
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO rulesd_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(
            f"migration {migration.path.name} failed: {detail}",
            hint="nothing from this migration was applied; fix the SQL or the database and run rulesd db upgrade again",
        ) from exc
