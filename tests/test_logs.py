"""Logging: JSON lines, text lines and correlation ids carried through context."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from rulesd.logs import JsonFormatter, TextFormatter, _ContextFilter, log_context


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
