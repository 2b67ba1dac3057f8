"""Migrations: order, idempotence, checksums and concurrent upgrades."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from rulesd.db import migrate
from rulesd.errors import MigrationError
from rulesd.resources import sql_dir
from rulesd.servicetitan.catalog import BOOKKEEPING_COLUMNS, ENTITY_LIST


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(sql_dir(), target)
    return target


def test_upgrade_applies_all_then_nothing(empty_database_url: str) -> None:
    first = migrate.upgrade(empty_database_url)
    second = migrate.upgrade(empty_database_url)

    assert first == [m.path.name for m in migrate.discover()]
    assert second == []
    assert all(s.state == "applied" for s in migrate.status(empty_database_url))


def test_status_lists_pending_before_upgrade(empty_database_url: str) -> None:
    states = {s.state for s in migrate.status(empty_database_url)}

    assert states == {"pending"}


def test_changed_migration_is_rejected_by_name(empty_database_url: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    migrate.upgrade(empty_database_url, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")

    with pytest.raises(MigrationError, match=first.name):
        migrate.upgrade(empty_database_url, directory)
    assert any(s.state == "changed" for s in migrate.status(empty_database_url, directory))


def test_failed_migration_applies_nothing(empty_database_url: str, tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    (directory / "9999_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_function();\n")

    with pytest.raises(MigrationError, match="9999_broken.sql failed"):
        migrate.upgrade(empty_database_url, directory)
    with psycopg.connect(empty_database_url) as conn:
        exists = conn.execute("SELECT to_regclass('half_done')").fetchone()[0]
    assert exists is None


def test_invalid_file_name_is_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    directory.mkdir()
    (directory / "add_things.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match="add_things.sql"):
        migrate.discover(directory)


def test_concurrent_upgrades_apply_each_once(empty_database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate.upgrade(empty_database_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m.path.name for m in migrate.discover())


def test_mirror_tables_match_catalog(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for entity in ENTITY_LIST:
            rows = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                (entity.table,),
            ).fetchall()
            actual = {name: data_type for name, data_type in rows}
            expected = {c.name for c in entity.all_columns} | set(BOOKKEEPING_COLUMNS)
            assert set(actual) == expected, entity.table
            for column in entity.all_columns:
                pg_type = {"timestamptz": "timestamp with time zone"}.get(column.type, column.type)
                assert actual[column.name] == pg_type, f"{entity.table}.{column.name}"
