"""The demo's settings and time: built from defaults, never from a configuration file or provider keys."""

from __future__ import annotations

import dataclasses
import logging
import os
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from rulesd.config import (
    AgentSettings,
    BusinessSettings,
    DatabaseSettings,
    EngineSettings,
    MessagingSettings,
    RulesSettings,
    Settings,
    SyncSettings,
)
from rulesd.errors import ConfigError
from rulesd.resources import data_dir
from rulesd.servicetitan.simulator.server import SimulatorServer
from rulesd.servicetitan.simulator.testing import client_settings

logger = logging.getLogger(__name__)

DEFAULT_SPEED = 2880.0  # demo seconds per real second: two days pass in one real minute
BUSINESS_TIMEZONE = "America/Chicago"
BUSINESS_NAME = "Prairie Comfort Heating & Air"
# Demo time starts on a Monday at 11:00 business time, so a two-day delay
# lands on Wednesday inside business hours and outside every US zone's
# quiet hours.
START_WEEKDAY_TIME = time(11, 0)
ENGINE_LEASE = timedelta(seconds=60)  # demo time, before scaling by the speed
ENGINE_POLL = timedelta(seconds=2)  # real seconds between event scans besides NOTIFY
ENGINE_TICK = timedelta(seconds=1)  # real seconds, the longest sleep of the execution loop


def demo_start(now: datetime, zone_name: str = BUSINESS_TIMEZONE) -> datetime:
    """Return the demo's start time: 11:00 in ``zone_name`` on the Monday of the week of ``now``."""
    zone = ZoneInfo(zone_name)
    local = now.astimezone(zone)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime.combine(monday, START_WEEKDAY_TIME, tzinfo=zone).astimezone(timezone.utc)


def shipped_rules() -> Path:
    """Return the rules that ship with rulesd: ``rules/`` beside the package, else ``./rules``.

    An editable install or a checkout finds ``rules/`` beside the package.
    A wheel does not carry it, so a user who installed from a clone and
    runs the demo from the clone's directory gets ``./rules``.
    """
    try:
        return data_dir("rules")
    except FileNotFoundError as exc:
        if Path("rules").is_dir():
            return Path("rules")
        raise ConfigError(
            "the demo rules directory (rules/) was not found beside the rulesd package or in the current directory",
            hint="run rulesd demo from a checkout of rulesd, or give a rule directory with --rules",
        ) from exc


def demo_settings(database_url: str, server: SimulatorServer, rules_dir: Path, speed: float) -> Settings:
    """Build the demo's settings: dry run forced, no SMS or e-mail provider, sync from ``server``.

    Only ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` are read from the
    environment. A configuration file, ``RULESD_*`` variables and the
    Twilio and SMTP settings are ignored, so nothing can reach a real phone
    or inbox.
    """
    engine = EngineSettings(
        poll_interval=ENGINE_POLL,
        tick=ENGINE_TICK,
        # The lease counts in demo time, so it is scaled to stay about a real minute long.
        lease=ENGINE_LEASE * speed,
        shutdown_timeout=timedelta(seconds=5),
    )
    agent = AgentSettings(
        api_key=os.environ.get("ANTHROPIC_API_KEY") or None,
        base_url=os.environ.get("ANTHROPIC_BASE_URL") or None,
    )
    return Settings(
        database=DatabaseSettings(url=database_url),
        servicetitan=client_settings(server),
        sync=SyncSettings(),
        engine=engine,
        business=BusinessSettings(
            name=BUSINESS_NAME, sign_off=f"The team at {BUSINESS_NAME}", timezone=BUSINESS_TIMEZONE,
        ),
        agent=agent,
        messaging=dataclasses.replace(MessagingSettings(), dry_run=True),
        rules=RulesSettings(directory=str(rules_dir)),
    )
