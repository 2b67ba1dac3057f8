"""Settings: file, environment, secrets and validation messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rulesd.config import load_settings
from rulesd.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rulesd.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})

    assert settings.database.url is None
    assert settings.database.data_dir == ".rulesd/pgdata"
    assert settings.sync.incremental_interval == timedelta(minutes=5)
    assert settings.source is None


def test_file_values_and_durations(tmp_path: Path) -> None:
    path = _write(tmp_path, "sync:\n  incremental_interval: 10m\nengine:\n  flood_limit: 50\n")
    settings = load_settings(path, environ={})

    assert settings.sync.incremental_interval == timedelta(minutes=10)
    assert settings.engine.flood_limit == 50
    assert settings.source == path


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "database:\n  url: postgresql://file/db\n")
    settings = load_settings(path, environ={"RULESD_DATABASE_URL": "postgresql://env/db"})

    assert settings.database.url == "postgresql://env/db"


def test_legacy_database_variable_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"SERVICETITAN_DATABASE_URL": "postgresql://legacy/db"})

    assert settings.database.url == "postgresql://legacy/db"


def test_secret_in_file_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "servicetitan:\n  client_secret: hunter2\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    assert "servicetitan.client_secret is a secret" in raised.value.message
    assert "SERVICE_TITAN_CLIENT_SECRET" in (raised.value.hint or "")
    assert "hunter2" not in str(raised.value)


def test_secrets_from_environment_stay_out_of_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        environ={
            "SERVICE_TITAN_CLIENT_SECRET": "st-secret-value",
            "ANTHROPIC_API_KEY": "sk-ant-value",
            "TWILIO_AUTH_TOKEN": "twilio-value",
            "SMTP_PASSWORD": "smtp-value",
            "RULESD_DATABASE_URL": "postgresql://u:db-password@host/db",
        }
    )

    assert settings.servicetitan.client_secret == "st-secret-value"
    text = repr(settings)
    for secret in ("st-secret-value", "sk-ant-value", "twilio-value", "smtp-value", "db-password"):
        assert secret not in text


def test_unknown_key_names_its_location(tmp_path: Path) -> None:
    path = _write(tmp_path, "engine:\n  flod_limit: 5\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    assert "engine" in raised.value.message
    assert "flod_limit" in raised.value.message


def test_wrong_type_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "engine:\n  flood_limit: lots\n")

    with pytest.raises(ConfigError, match="engine.flood_limit"):
        load_settings(path, environ={})


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "engine:\n  tick: [1, 2\n")

    with pytest.raises(ConfigError, match=r"rulesd.yaml:\d+:\d+: invalid YAML"):
        load_settings(path, environ={})


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
