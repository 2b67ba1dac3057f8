"""Settings from ``rulesd.yaml`` and the environment.

The file is validated against ``schema/config.schema.json``. Secrets (the
ServiceTitan client secret, the Anthropic API key, the Twilio auth token,
the SMTP password) are read only from the environment and are never part
of ``repr`` or a log line. Every key, its default and its unit is listed in
``docs/configuration.md``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping, get_type_hints

import jsonschema
import yaml

from rulesd.durations import parse_duration
from rulesd.errors import ConfigError
from rulesd.resources import schema_path

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "rulesd.yaml"


@dataclass(frozen=True)
class DatabaseSettings:
    """The Postgres database. With no URL, rulesd starts an embedded one."""

    url: str | None = field(default=None, repr=False)  # may contain a password
    data_dir: str = ".rulesd/pgdata"
    pool_size: int = 10


@dataclass(frozen=True)
class ServiceTitanSettings:
    """How to reach the ServiceTitan API. The client secret is read from the environment."""

    environment: str = "production"
    tenant_id: int | None = None
    client_id: str | None = None
    app_key: str | None = field(default=None, repr=False)
    auth_url: str | None = None
    api_url: str | None = None
    page_size: int = 5000
    page_delay: timedelta = timedelta(milliseconds=100)
    rate_limit: float = 60.0  # requests per second per tenant
    timeout: timedelta = timedelta(seconds=120)
    max_retries: int = 10
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SyncSettings:
    """When and how the mirror is refreshed."""

    incremental_interval: timedelta = timedelta(minutes=5)
    full_schedule: str = "0 2 * * *"
    overlap: timedelta = timedelta(minutes=2)
    concurrency: int = 4
    batch_size: int = 5000


@dataclass(frozen=True)
class EngineSettings:
    """Timings and limits of the workflow engine."""

    poll_interval: timedelta = timedelta(seconds=30)
    tick: timedelta = timedelta(seconds=10)
    flood_limit: int = 200  # enrollments per rule per hour before the rule is paused
    max_concurrent_steps: int = 8
    max_attempts: int = 5
    lease: timedelta = timedelta(seconds=60)
    shutdown_timeout: timedelta = timedelta(seconds=30)
    event_batch_size: int = 2000


@dataclass(frozen=True)
class BusinessSettings:
    """The contractor's profile, given to the model in every step."""

    name: str = "Your Company"
    sign_off: str = "The team at Your Company"
    tone: str = "friendly and brief"
    timezone: str = "America/Chicago"
    phone: str | None = None


@dataclass(frozen=True)
class AgentSettings:
    """Settings for calling Claude. The API key is read from ANTHROPIC_API_KEY."""

    model: str = "claude-sonnet-4-5"
    max_tokens: int = 1024
    max_turns: int = 6
    temperature: float = 0.3
    daily_token_budget: int = 2_000_000
    timeout: timedelta = timedelta(seconds=60)
    max_retries: int = 4
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MessagingSettings:
    """Guards that apply to every message, whatever the rule contains."""

    dry_run: bool | None = None  # None: dry run unless a provider is configured
    quiet_hours: str = "21:00-08:00"
    sms_per_day: int = 1
    sms_per_week: int = 3
    emails_per_day: int = 2
    emails_per_week: int = 5
    on_cap: str = "defer"  # or "skip"
    sms_max_length: int = 480
    email_max_bytes: int = 100_000


@dataclass(frozen=True)
class SmsSettings:
    """Twilio's Messages API. The auth token is read from TWILIO_AUTH_TOKEN."""

    provider: str | None = None  # "twilio" or None
    account_sid: str | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"
    auth_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class EmailSettings:
    """An SMTP server. The password is read from SMTP_PASSWORD."""

    provider: str | None = None  # "smtp" or None
    host: str | None = None
    port: int = 587
    security: str = "starttls"  # starttls, tls or none
    username: str | None = None
    from_address: str | None = None
    from_name: str | None = None
    timeout: timedelta = timedelta(seconds=30)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RulesSettings:
    directory: str = "rules"


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "info"
    format: str = "text"  # text or json


@dataclass(frozen=True)
class Settings:
    """Every rulesd setting. ``source`` is the file it came from, if any."""

    database: DatabaseSettings = DatabaseSettings()
    servicetitan: ServiceTitanSettings = ServiceTitanSettings()
    sync: SyncSettings = SyncSettings()
    engine: EngineSettings = EngineSettings()
    business: BusinessSettings = BusinessSettings()
    agent: AgentSettings = AgentSettings()
    messaging: MessagingSettings = MessagingSettings()
    sms: SmsSettings = SmsSettings()
    email: EmailSettings = EmailSettings()
    rules: RulesSettings = RulesSettings()
    logging: LoggingSettings = LoggingSettings()
    source: Path | None = None


# Environment variables read on top of the file: (section, key) -> names,
# first set wins. SERVICETITAN_DATABASE_URL and the SERVICE_TITAN_* names
# are the ones existing deployments already use.
ENVIRONMENT: dict[tuple[str, str], tuple[str, ...]] = {
    ("database", "url"): ("RULESD_DATABASE_URL", "SERVICETITAN_DATABASE_URL"),
    ("database", "data_dir"): ("RULESD_DATA_DIR",),
    ("servicetitan", "tenant_id"): ("SERVICE_TITAN_TENANT_ID",),
    ("servicetitan", "client_id"): ("SERVICE_TITAN_CLIENT_ID",),
    ("servicetitan", "client_secret"): ("SERVICE_TITAN_CLIENT_SECRET",),
    ("servicetitan", "app_key"): ("SERVICE_TITAN_APP_KEY",),
    ("servicetitan", "environment"): ("SERVICE_TITAN_ENVIRONMENT",),
    ("servicetitan", "auth_url"): ("SERVICE_TITAN_AUTH_URL",),
    ("servicetitan", "api_url"): ("SERVICE_TITAN_API_URL",),
    ("agent", "api_key"): ("ANTHROPIC_API_KEY",),
    ("agent", "base_url"): ("ANTHROPIC_BASE_URL",),
    ("sms", "auth_token"): ("TWILIO_AUTH_TOKEN",),
    ("sms", "account_sid"): ("TWILIO_ACCOUNT_SID",),
    ("email", "password"): ("SMTP_PASSWORD",),
}

# Keys that may only come from the environment: a file that sets one is rejected.
SECRET_KEYS = {
    ("servicetitan", "client_secret"),
    ("agent", "api_key"),
    ("sms", "auth_token"),
    ("email", "password"),
}


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Load settings from ``path`` (or ``./rulesd.yaml`` when it exists) and the environment.

    ``overrides`` (from command-line options) win over both. Raise
    ``ConfigError`` naming the file, the key and the problem.
    """
    env = os.environ if environ is None else environ
    source = _resolve_path(path)
    document = _read_file(source) if source else {}
    _validate(document, source)

    merged: dict[str, dict[str, Any]] = {key: dict(value) for key, value in document.items()}
    for (section, key), names in ENVIRONMENT.items():
        for name in names:
            value = env.get(name)
            if value:
                merged.setdefault(section, {})[key] = value
                break
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                merged.setdefault(section, {})[key] = value

    settings = _build(Settings, merged, "")
    return _replace_source(settings, source)


def _resolve_path(path: Path | None) -> Path | None:
    if path is not None:
        if not path.is_file():
            raise ConfigError(
                f"configuration file {path} not found",
                hint="check the --config path, or omit it to use the defaults",
            )
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}", hint="fix the file's syntax") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return document


def _validate(document: dict[str, Any], source: Path | None) -> None:
    for section, key in SECRET_KEYS:
        if isinstance(document.get(section), dict) and key in document[section]:
            names = " or ".join(ENVIRONMENT[(section, key)])
            raise ConfigError(
                f"{source}: {section}.{key} is a secret and may not be set in the file",
                hint=f"remove it and set the environment variable {names} instead",
            )
    schema = json.loads(schema_path("config.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for error in errors:
            location = ".".join(str(part) for part in error.absolute_path) or "(top level)"
            lines.append(f"{source}: {location}: {error.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for item in fields(cls):
        if item.name == "source" or item.name not in values:
            continue
        raw = values[item.name]
        key = f"{prefix}{item.name}"
        default = getattr(cls(), item.name)
        if is_dataclass(default):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"configuration key {key}: expected a mapping")
            kwargs[item.name] = _build(type(default), raw, key + ".")
        else:
            kwargs[item.name] = _coerce(raw, hints[item.name], key)
    return cls(**kwargs)


def _coerce(raw: Any, hint: Any, key: str) -> Any:
    text = str(hint)
    try:
        if raw is None:
            return None
        if "timedelta" in text:
            return parse_duration(raw)
        if "bool" in text:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if "int" in text and "str" not in text:
            return int(raw)
        if "float" in text:
            return float(raw)
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"configuration key {key}: {exc}") from exc


def _replace_source(settings: Settings, source: Path | None) -> Settings:
    from dataclasses import replace

    return replace(settings, source=source)
