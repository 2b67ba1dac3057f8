"""Acceptance: ``rulesd demo --exit-after`` as a user runs it, then the facts in the database it used.

The demo runs as a subprocess in an empty directory, with a configuration
file and Twilio credentials that point at a fake Twilio on 127.0.0.1. The
demo must ignore both, so the fake must receive nothing. With a model key,
the model is a fake Anthropic server on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rulesd.demo.database import DEMO_MARK, reset_database
from rulesd.errors import DatabaseError
from tests.fakes.anthropic_server import AnthropicServer, Reply, text, tool_use
from tests.fakes.twilio_server import TwilioServer

# The story's first step runs about 65 s and its stop about 75 s after the
# daemon starts. Start-up (imports, Postgres, initial sync) can take a
# minute on a loaded machine, so the runs get that much margin on top.
EXIT_AFTER = 160  # real seconds
MODEL_EXIT_AFTER = 150  # real seconds
DRAFT = "Hi Dana, any questions about your furnace estimate? Prairie Comfort"
PROCESS_TIMEOUT = 300  # real seconds before the test gives up on the subprocess


@pytest.fixture
def fake_twilio() -> Iterator[TwilioServer]:
    server = TwilioServer(lifetime=PROCESS_TIMEOUT + 60).start()
    try:
        yield server
    finally:
        server.stop()


def _write_sending_config(directory: Path, twilio: TwilioServer) -> None:
    # A configuration that would send real messages if the demo read it.
    (directory / "rulesd.yaml").write_text(
        "messaging:\n"
        "  dry_run: false\n"
        "  quiet_hours: 'off'\n"
        "sms:\n"
        "  provider: twilio\n"
        f"  base_url: {twilio.base_url}\n"
        "  from_number: '+15005550006'\n",
        encoding="utf-8",
    )


@pytest.fixture
def fake_anthropic() -> Iterator[AnthropicServer]:
    server = AnthropicServer(lifetime=PROCESS_TIMEOUT + 60).start()
    server.set_default(_draft_one_sms)
    try:
        yield server
    finally:
        server.stop()


def _draft_one_sms(body: dict[str, Any]) -> Reply:
    last = body["messages"][-1]["content"]
    if any(isinstance(block, dict) and block.get("type") == "tool_result" for block in last):
        return text("Drafted the reminder.")
    return tool_use("send_sms", {"body": DRAFT})


def _run_demo(
    directory: Path,
    database_url: str,
    twilio: TwilioServer,
    *,
    exit_after: int = EXIT_AFTER,
    model_url: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANTHROPIC_", "RULESD_"))}
    env["TWILIO_ACCOUNT_SID"] = twilio.state.account_sid
    env["TWILIO_AUTH_TOKEN"] = twilio.state.auth_token
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    if model_url is not None:
        env["ANTHROPIC_API_KEY"] = "test-key"
        env["ANTHROPIC_BASE_URL"] = model_url
    return subprocess.run(
        [sys.executable, "-m", "rulesd.cli", "--database-url", database_url, "demo", "--exit-after", str(exit_after)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def _scalar(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.slow
def test_demo_shows_sync_enrollment_step_and_stop(
    tmp_path: Path, database_url: str, fake_twilio: TwilioServer
) -> None:
    _write_sending_config(tmp_path, fake_twilio)

    result = _run_demo(tmp_path, database_url, fake_twilio)

    assert result.returncode == 0, f"rulesd demo exited with {result.returncode}:\n{result.stderr[-3000:]}"
    output = result.stdout
    assert "Claude is not called" in output
    assert "changes from ServiceTitan:" in output
    assert " enrolled in estimate-follow-up" in output
    assert "step text of estimate" in output
    assert "action for the model: Text Dana Whitfield" in output
    assert "stopped in estimate-follow-up: stop_if held" in output
    assert "deferred to" in output
    assert "nothing was sent" in result.stderr

    with psycopg.connect(database_url, autocommit=True) as conn:
        assert _scalar(conn, "SELECT count(*) FROM st_sync_log WHERE status = 'succeeded' AND kind = 'initial'") > 0
        assert _scalar(conn, "SELECT count(*) FROM st_sync_log WHERE status = 'succeeded' AND kind = 'incremental'") > 0
        assert _scalar(conn, "SELECT count(*) FROM st_sync_log WHERE status <> 'succeeded'") == 0
        assert _scalar(conn, "SELECT count(*) FROM st_customers") > 0
        assert _scalar(conn, "SELECT count(*) FROM st_estimates") > 0
        assert _scalar(conn, "SELECT count(*) FROM workflow_instances") > 0
        assert _scalar(conn, "SELECT count(*) FROM workflow_step_runs WHERE status = 'done' AND dry_run") > 0
        assert _scalar(conn, "SELECT count(*) FROM workflow_step_runs WHERE status = 'done' AND NOT dry_run") == 0
        story_stop = conn.execute(
            """
            SELECT i.status, i.stop_reason, e.status
              FROM workflow_instances i
              JOIN st_estimates e ON e.id = i.entity_id
              JOIN st_customers c ON c.id = e.customer_id
             WHERE i.entity = 'estimate' AND c.name = 'Dana Whitfield'
            """
        ).fetchone()
        assert story_stop is not None, "the story's estimate was never enrolled"
        assert story_stop[0] == "stopped"
        assert "Sold" in (story_stop[1] or "")
        assert story_stop[2] == "Sold"
        assert _scalar(conn, "SELECT count(*) FROM action_ledger") == 0

    assert fake_twilio.state.requests == 0
    assert fake_twilio.messages == []


@pytest.mark.slow
def test_demo_drafts_with_model_key(
    tmp_path: Path, database_url: str, fake_twilio: TwilioServer, fake_anthropic: AnthropicServer
) -> None:
    _write_sending_config(tmp_path, fake_twilio)

    result = _run_demo(
        tmp_path, database_url, fake_twilio, exit_after=MODEL_EXIT_AFTER, model_url=fake_anthropic.base_url
    )

    assert result.returncode == 0, f"rulesd demo exited with {result.returncode}:\n{result.stderr[-3000:]}"
    output = result.stdout
    assert "Claude drafts each message" in output
    assert "Claude is not called" not in output
    assert f"(dry_run, not sent): {DRAFT}" in output
    assert "action for the model:" not in output

    with psycopg.connect(database_url, autocommit=True) as conn:
        assert _scalar(conn, "SELECT count(*) FROM action_ledger WHERE status = 'dry_run'") > 0
        # A guard may reject a draft (an opted-out number), but no row may show a send.
        sent = conn.execute(
            "SELECT id, status, provider, provider_id FROM action_ledger "
            "WHERE status = 'sent' OR sent_at IS NOT NULL OR provider_id IS NOT NULL"
        ).fetchall()
        assert sent == []

    assert len(fake_anthropic.requests) > 0
    assert fake_anthropic.problems == []
    assert fake_twilio.state.requests == 0


def _log_a_sync(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO st_sync_log (run_id, entity, kind, status) VALUES (gen_random_uuid(), 'customer', 'initial', 'succeeded')"
    )


def test_demo_reset_rejects_real_mirror(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _log_a_sync(conn)

    with pytest.raises(DatabaseError, match="already contains a synced mirror"):
        reset_database(database_url)

    with psycopg.connect(database_url, autocommit=True) as conn:
        assert _scalar(conn, "SELECT count(*) FROM st_sync_log") == 1


def test_demo_reset_empties_own_database(database_url: str) -> None:
    reset_database(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        _log_a_sync(conn)

    reset_database(database_url)

    with psycopg.connect(database_url, autocommit=True) as conn:
        assert _scalar(conn, "SELECT count(*) FROM st_sync_log") == 0
        assert _scalar(conn, "SELECT obj_description('public'::regnamespace, 'pg_namespace')") == DEMO_MARK
