"""Logging: JSON lines, text lines and correlation ids carried through context."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from rich.console import Console

from rulesd.logs import (
    ConsoleHandler,
    JsonFormatter,
    TextFormatter,
    _ContextFilter,
    configure_logging,
    log_context,
    log_through_console,
)
from rulesd.sync.progress import RichProgress


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_ContextFilter())
    logger = logging.getLogger("rulesd.test_logs")
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_message_and_extra(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("fetched %d records", 5, extra={"event": "sync_page", "entity": "job"})

    record = _records(stream)[0]
    assert record["message"] == "fetched 5 records"
    assert record["level"] == "info"
    assert record["event"] == "sync_page"
    assert record["entity"] == "job"


def test_context_ids_reach_records(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    with log_context(rule_id="estimate-follow-up", instance_id=42):
        with log_context(step_run_id=7):
            logger.info("step ran")
        logger.info("after step")
    logger.info("outside")

    inner, after, outside = _records(stream)
    assert inner["rule_id"] == "estimate-follow-up"
    assert inner["instance_id"] == 42
    assert inner["step_run_id"] == 7
    assert "step_run_id" not in after
    assert after["instance_id"] == 42
    assert "rule_id" not in outside


def test_context_ids_follow_asyncio_tasks(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured

    async def worker(name: str) -> None:
        with log_context(sync_run_id=name):
            await asyncio.sleep(0)
            logger.info("page")

    async def run() -> None:
        await asyncio.gather(worker("a"), worker("b"))

    asyncio.run(run())
    assert sorted(r["sync_run_id"] for r in _records(stream)) == ["a", "b"]


def test_text_format_shows_extras() -> None:
    record = logging.makeLogRecord({"name": "rulesd.x", "levelname": "WARNING", "msg": "retrying", "event": "retry"})

    line = TextFormatter().format(record)
    assert "warning" in line
    assert "rulesd.x: retrying" in line
    assert "[event=retry]" in line


# The ``captured`` fixture stops rulesd.test_logs from propagating, so the
# tests below log through another logger that reaches the root handlers.
DISPLAY_LOGGER = "rulesd.test_display"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and the levels back after a test that calls ``configure_logging``."""
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved_levels = (root.level, logging.getLogger("rulesd").level)
    try:
        yield
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_levels[0])
        logging.getLogger("rulesd").setLevel(saved_levels[1])


def _configure_with_fake_stderr(monkeypatch: pytest.MonkeyPatch, format: str) -> io.StringIO:
    # Patched in the test body: pytest puts its own capture back on sys.stderr after fixture set-up.
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("info", format)
    return stderr


def _terminal_console(output: io.StringIO) -> Console:
    return Console(file=output, force_terminal=True, width=60, color_system=None)


def _visible_lines(output: io.StringIO) -> list[str]:
    """Return the console's lines as a terminal leaves them: text after the last carriage return, no escapes."""
    lines = []
    for line in output.getvalue().split("\n"):
        last_redraw = line.rsplit("\r", 1)[-1]
        lines.append(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last_redraw))
    return lines


@pytest.mark.usefixtures("restore_logging")
def test_progress_routes_logs_through_console(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _configure_with_fake_stderr(monkeypatch, "text")
    output = io.StringIO()
    logger = logging.getLogger(DISPLAY_LOGGER)

    progress = RichProgress(_terminal_console(output))
    progress.start("customer", "initial", 100)
    logger.info("during the display", extra={"entity": "customer"})
    progress.close()
    logger.info("after the display")

    during = [line for line in _visible_lines(output) if "during the display" in line]
    assert len(during) == 1
    assert during[0].endswith("rulesd.test_display: during the display [entity=customer]")
    assert "during the display" not in stderr.getvalue()
    assert "after the display" in stderr.getvalue()
    assert "after the display" not in output.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_progress_keeps_json_lines_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _configure_with_fake_stderr(monkeypatch, "json")
    output = io.StringIO()
    message = "a message longer than the console is wide, " * 3

    progress = RichProgress(_terminal_console(output))
    progress.start("customer", "initial", 100)
    logging.getLogger(DISPLAY_LOGGER).info(message, extra={"event": "sync_page"})
    progress.close()

    json_lines = [line for line in _visible_lines(output) if line.startswith("{")]
    assert len(json_lines) == 1
    record = json.loads(json_lines[0])
    assert record["message"] == message
    assert record["event"] == "sync_page"
    assert stderr.getvalue() == ""


@pytest.mark.usefixtures("restore_logging")
def test_log_through_console_restores_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    _configure_with_fake_stderr(monkeypatch, "text")
    root = logging.getLogger()
    before = list(root.handlers)

    with log_through_console(_terminal_console(io.StringIO())):
        inside = list(root.handlers)

    assert root.handlers == before
    assert len(inside) == len(before)
    assert any(isinstance(handler, ConsoleHandler) for handler in inside)
