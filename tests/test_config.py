"""Settings: file, environment, secrets and validation messages."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from rulesd.cli import main
from rulesd.config import ENVIRONMENT, SECRET_KEYS, load_settings
from rulesd.errors import ConfigError
from rulesd.resources import schema_path


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


def test_environment_integer_is_converted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"SERVICE_TITAN_TENANT_ID": " 123 "})

    assert settings.servicetitan.tenant_id == 123


def test_environment_unknown_choice_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={"SERVICE_TITAN_ENVIRONMENT": "sandbox"})
    message = raised.value.message
    assert raised.value.exit_code == 2
    assert "SERVICE_TITAN_ENVIRONMENT" in message
    assert "'sandbox'" in message
    assert "'production'" in message
    assert "'integration'" in message


@pytest.mark.parametrize(("value", "problem"), [
    ("abc", "'abc' is not of type 'integer'"),
    ("12.5", "'12.5' is not of type 'integer'"),
    ("0", "0 is less than the minimum of 1"),
])
def test_environment_tenant_id_invalid(
    value: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={"SERVICE_TITAN_TENANT_ID": value})
    message = raised.value.message
    assert "environment variable SERVICE_TITAN_TENANT_ID" in message
    assert problem in message
    assert "invalid literal" not in message


def test_environment_and_file_errors_listed_together(tmp_path: Path) -> None:
    path = _write(tmp_path, "engine:\n  flood_limit: lots\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={"SERVICE_TITAN_ENVIRONMENT": "sandbox", "SERVICE_TITAN_TENANT_ID": "abc"})
    message = raised.value.message
    assert "engine.flood_limit" in message
    assert "SERVICE_TITAN_ENVIRONMENT" in message
    assert "SERVICE_TITAN_TENANT_ID" in message


def test_environment_error_shows_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    secrets = {
        "SERVICE_TITAN_CLIENT_SECRET": "st-secret-value\n",
        "SERVICE_TITAN_APP_KEY": "app-key-value\n",
        "ANTHROPIC_API_KEY": "sk-ant-value\r\n",
        "TWILIO_AUTH_TOKEN": "twilio-value\n",
        "SMTP_PASSWORD": "smtp-value\n",
        "RULESD_DATABASE_URL": "postgresql://u:db-password@host/db\n",
    }

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={**secrets, "SERVICE_TITAN_ENVIRONMENT": "sandbox"})
    text = str(raised.value)
    for name in secrets:
        assert name in text
    for secret in ("st-secret-value", "app-key-value", "sk-ant-value", "twilio-value", "smtp-value", "db-password"):
        assert secret not in text
    assert "sandbox" in text


def test_file_app_key_error_hides_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "servicetitan:\n  app_key: 12345678\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    assert "servicetitan.app_key" in raised.value.message
    assert "12345678" not in str(raised.value)


@pytest.mark.parametrize("name", ["SERVICE_TITAN_API_URL", "SERVICE_TITAN_AUTH_URL", "ANTHROPIC_BASE_URL"])
@pytest.mark.parametrize("value", ["127.0.0.1:18765", "localhost:8080/connect/token", "ftp://example.com", "http://"])
def test_environment_url_without_scheme(name: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={name: value})
    message = raised.value.message
    assert name in message
    assert repr(value) in message
    assert "http:// or https://" in message


def test_file_url_without_scheme(tmp_path: Path) -> None:
    path = _write(tmp_path, "servicetitan:\n  api_url: 127.0.0.1:18765\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    assert "servicetitan.api_url" in raised.value.message
    assert "http:// or https://" in raised.value.message


def test_url_with_scheme_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={
        "SERVICE_TITAN_API_URL": "http://127.0.0.1:18765",
        "SERVICE_TITAN_AUTH_URL": "https://auth.example.com/connect/token",
    })

    assert settings.servicetitan.api_url == "http://127.0.0.1:18765"
    assert settings.servicetitan.auth_url == "https://auth.example.com/connect/token"


def test_invalid_option_names_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as raised:
        load_settings(environ={}, overrides={"logging": {"level": "loud"}})
    assert "command-line option for logging.level" in raised.value.message
    assert "'loud'" in raised.value.message


def test_every_variable_is_in_schema_or_secret() -> None:
    schema = json.loads(schema_path("config.schema.json").read_text(encoding="utf-8"))
    for section, key in ENVIRONMENT:
        if (section, key) in SECRET_KEYS:
            continue
        assert key in schema["properties"][section]["properties"], f"{section}.{key} is not in the schema"


def test_invalid_environment_exits_with_status_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVICE_TITAN_ENVIRONMENT", "sandbox")

    result = CliRunner().invoke(main, ["sync", "--no-migrate"])

    assert result.exit_code == 2, result.output
    assert "SERVICE_TITAN_ENVIRONMENT" in result.output
