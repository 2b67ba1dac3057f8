"""``rulesd db`` through the real command line: output, exit codes and error messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rulesd import __version__


def _rulesd(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RULESD_", "SERVICETITAN_"))}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rulesd.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_version_prints_package_version(tmp_path: Path) -> None:
    result = _rulesd("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert __version__ in result.stdout


def test_upgrade_then_status_on_server(database_server_url: str, empty_database_url: str, tmp_path: Path) -> None:
    first = _rulesd("--database-url", empty_database_url, "db", "upgrade", cwd=tmp_path)
    second = _rulesd("--database-url", empty_database_url, "db", "upgrade", cwd=tmp_path)
    status = _rulesd("--database-url", empty_database_url, "db", "status", cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert "applied 0001_mirror_tables.sql" in first.stdout
    assert "up to date" in second.stdout
    assert status.returncode == 0
    assert "0002_change_capture" in status.stdout
    assert "pending" not in status.stdout


@pytest.mark.slow
def test_upgrade_without_configuration_uses_embedded(tmp_path: Path) -> None:
    first = _rulesd("db", "upgrade", cwd=tmp_path)
    second = _rulesd("db", "upgrade", cwd=tmp_path)
    status = _rulesd("db", "status", cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert (tmp_path / ".rulesd" / "pgdata" / "PG_VERSION").exists()
    assert "using embedded Postgres" in first.stderr
    assert "up to date" in second.stdout
    assert status.returncode == 0
    assert "applied" in status.stdout


def test_unreachable_server_gives_one_line(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback has no Postgres; nothing leaves the machine.
    result = _rulesd("--database-url", "postgresql://postgres@127.0.0.1:9/x", "db", "status", cwd=tmp_path)

    assert result.returncode == 3
    assert result.stderr.startswith("error: cannot connect to Postgres at postgresql://postgres@127.0.0.1:9/x")
    assert "hint: start the Postgres server" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_database_gives_hint(database_server_url: str, tmp_path: Path) -> None:
    from psycopg.conninfo import make_conninfo

    url = make_conninfo(database_server_url, dbname="rulesd_no_such_database")
    result = _rulesd("--database-url", url, "db", "status", cwd=tmp_path)

    assert result.returncode == 3
    assert "does not exist" in result.stderr
    assert "hint: create the database first" in result.stderr
    assert "Traceback" not in result.stderr


def test_password_is_redacted_in_errors(tmp_path: Path) -> None:
    result = _rulesd("--database-url", "postgresql://postgres:s3cr3t@127.0.0.1:9/x", "db", "status", cwd=tmp_path)

    assert result.returncode == 3
    assert "s3cr3t" not in result.stderr
    assert "***" in result.stderr


def test_foreign_data_directory_is_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-postgres"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("someone else's files")
    config = tmp_path / "rulesd.yaml"
    config.write_text(f"database:\n  data_dir: {data_dir}\n")

    result = _rulesd("db", "upgrade", cwd=tmp_path)

    assert result.returncode == 3
    assert "is not empty and is not a Postgres data directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert (data_dir / "notes.txt").read_text() == "someone else's files"


def test_changed_migration_names_file(database_url: str, tmp_path: Path) -> None:
    from psycopg import connect

    with connect(database_url) as conn:
        conn.execute("UPDATE rulesd_migrations SET checksum = 'x' WHERE version = 1")
    result = _rulesd("--database-url", database_url, "db", "upgrade", cwd=tmp_path)

    assert result.returncode == 3
    assert "0001_mirror_tables.sql changed after it was applied" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_gives_exit_2(tmp_path: Path) -> None:
    (tmp_path / "rulesd.yaml").write_text("engine:\n  flood_limit: lots\n")

    result = _rulesd("db", "status", cwd=tmp_path)

    assert result.returncode == 2
    assert "engine.flood_limit" in result.stderr


def test_shell_runs_psql_on_database(database_url: str, tmp_path: Path) -> None:
    result = _rulesd("--database-url", database_url, "db", "shell", "-Atc", "SELECT count(*) FROM st_tenant", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_shell_passes_psql_exit_code(database_url: str, tmp_path: Path) -> None:
    result = _rulesd("--database-url", database_url, "db", "shell", "-c", "SELECT * FROM no_such_table", cwd=tmp_path)

    assert result.returncode != 0
    assert "no_such_table" in result.stderr
