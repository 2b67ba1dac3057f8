"""State shared by every subcommand: settings, logging and the database, opened on first use."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rulesd.config import Settings, load_settings
from rulesd.db.server import DatabaseServer, open_database_server
from rulesd.logs import configure_logging

logger = logging.getLogger(__name__)


@dataclass
class CliContext:
    """Global options, and the settings and database server they lead to."""

    config_path: Path | None = None
    database_url: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _server: DatabaseServer | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            overrides = {
                "database": {"url": self.database_url},
                "logging": {"level": self.log_level, "format": self.log_format},
            }
            self._settings = load_settings(self.config_path, overrides=overrides)
            configure_logging(self._settings.logging.level, self._settings.logging.format)
            self.log_level = self._settings.logging.level
        return self._settings

    def database_url_or_start(self) -> str:
        """Return the database URL, starting the embedded Postgres when none is configured."""
        if self._server is None:
            self._server = open_database_server(self.settings.database)
        return self._server.url

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
