"""Settings from ``rulesd.yaml`` and the environment.

The file, the environment variables and the command-line overrides are
each validated against ``schema/config.schema.json``. Secrets (the
ServiceTitan client secret, the Anthropic API key, the Twilio auth token,
the SMTP password) are read only from the environment and are never part
of ``repr`` or a log line. Every key, its default and its unit is listed in
``docs/configuration.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import unicodedata
from collections.abc import Callable, Sequence
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

# Words read as booleans from the environment and from command-line values.
BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}


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

# Keys whose values the configuration errors never show: the fields left out
# of ``repr``, which are the secrets, the app key and the database URL.
SENSITIVE_KEYS = frozenset(
    (section.name, item.name)
    for section in fields(Settings)
    if is_dataclass(section.default)
    for item in fields(section.default)
    if not item.repr
)

HIDDEN_VALUE = "the value is not shown because it may contain a credential"

# A function that names where an invalid value came from, given its path in the document.
Describe = Callable[[Sequence[Any]], str]


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Load settings from ``path`` (or ``./rulesd.yaml`` when it exists) and the environment.

    ``overrides`` (from command-line options) win over both. The file, the
    environment variables and the overrides are each checked against the
    schema. Raise ``ConfigError`` listing every invalid value with the file
    and key or the variable it came from.
    """
    env = os.environ if environ is None else environ
    source = _resolve_path(path)
    document = _read_file(source) if source else {}
    _reject_secrets(document, source)

    schema = json.loads(schema_path("config.schema.json").read_text(encoding="utf-8"))
    variables = _read_environment(env, schema)
    options = _nest({
        (section, key): value
        for section, values in (overrides or {}).items()
        for key, value in values.items()
        if value is not None
    })
    names = {key: name for key, (name, _) in variables.items()}

    def describe_variable(path: Sequence[Any]) -> str:
        return f"environment variable {names.get(tuple(path[:2]), '')} ({_dotted(path)})"

    problems = [
        *_problems(document, schema, lambda path: f"{source}: {_dotted(path)}"),
        *_problems(_nest({key: value for key, (_, value) in variables.items()}), schema, describe_variable),
        *_problems(options, schema, lambda path: f"command-line option for {_dotted(path)}"),
    ]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))

    merged: dict[str, dict[str, Any]] = {key: dict(value) for key, value in document.items()}
    for (section, key), (_, value) in variables.items():
        merged.setdefault(section, {})[key] = value
    for section, values in options.items():
        merged.setdefault(section, {}).update(values)

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


def _reject_secrets(document: dict[str, Any], source: Path | None) -> None:
    for section, key in SECRET_KEYS:
        if isinstance(document.get(section), dict) and key in document[section]:
            names = " or ".join(ENVIRONMENT[(section, key)])
            raise ConfigError(
                f"{source}: {section}.{key} is a secret and may not be set in the file",
                hint=f"remove it and set the environment variable {names} instead",
            )


def _read_environment(
    env: Mapping[str, str], schema: Mapping[str, Any]
) -> dict[tuple[str, str], tuple[str, Any]]:
    """Return each setting set in ``env`` as (variable name, value converted to the schema's type)."""
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    for (section, key), names in ENVIRONMENT.items():
        for name in names:
            text = env.get(name)
            if text:
                spec = schema["properties"].get(section, {}).get("properties", {}).get(key, {})
                found[(section, key)] = (name, _convert(text, spec))
                break
    return found


def _convert(text: str, spec: Mapping[str, Any]) -> Any:
    """Convert a variable's text to the first JSON type of ``spec`` it parses as, else keep the text.

    Text that fits no type is kept, so the schema check reports it with its variable.
    """
    types = _json_types(spec)
    stripped = text.strip()
    if "integer" in types:
        try:
            return int(stripped)
        except ValueError:
            pass
    if "number" in types:
        try:
            number = float(stripped)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    if "boolean" in types and stripped.lower() in BOOLEAN_WORDS:
        return BOOLEAN_WORDS[stripped.lower()]
    return text


def _json_types(spec: Mapping[str, Any]) -> set[str]:
    declared = spec.get("type", [])
    types = {declared} if isinstance(declared, str) else set(declared)
    for branch in spec.get("anyOf", []):
        types |= _json_types(branch)
    return types


def _nest(values: Mapping[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    document: dict[str, dict[str, Any]] = {}
    for (section, key), value in values.items():
        document.setdefault(section, {})[key] = value
    return document


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _problems(document: Mapping[str, Any], schema: Mapping[str, Any], describe: Describe) -> list[str]:
    """Return one line per invalid value in ``document``, named by ``describe``.

    Secrets are not in the schema, so they are only checked for control
    characters, which a value copied with its line break would contain.
    """
    checked = {
        section: {key: value for key, value in values.items() if (section, key) not in SECRET_KEYS}
        if isinstance(values, Mapping) else values
        for section, values in document.items()
    }
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(checked), key=lambda e: [str(part) for part in e.absolute_path])
    lines = [f"{describe(list(error.absolute_path))}: {_error_text(error)}" for error in errors]

    for section, key in sorted(SENSITIVE_KEYS):
        values = document.get(section)
        value = values.get(key) if isinstance(values, Mapping) else None
        if isinstance(value, str) and any(unicodedata.category(char) == "Cc" for char in value):
            lines.append(f"{describe([section, key])}: the value contains a line break or another "
                         f"control character ({HIDDEN_VALUE})")
    return lines


def _error_text(error: jsonschema.ValidationError) -> str:
    """Describe a schema error; the value of a sensitive key is left out."""
    if tuple(error.absolute_path)[:2] in SENSITIVE_KEYS:
        if error.validator == "type":
            expected = error.validator_value
            names = [expected] if isinstance(expected, str) else list(expected)
            return f"expected {' or '.join(names)} ({HIDDEN_VALUE})"
        return f"the value fails the schema's {error.validator!r} check ({HIDDEN_VALUE})"
    if error.validator == "pattern" and isinstance(error.schema, Mapping) and "description" in error.schema:
        return f"{error.instance!r} is not {error.schema['description']}"
    return error.message


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
            if lowered in BOOLEAN_WORDS:
                return BOOLEAN_WORDS[lowered]
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
