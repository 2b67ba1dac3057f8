"""Tokens and estimated cost per agent step for the shipped rules.

Runs every step of ``rules/`` and ``examples/rules/`` through the real
executor and the real anthropic SDK, pointed at the scripted Messages API
server from ``tests/fakes`` on 127.0.0.1. SMS goes to the local
Twilio-compatible server and e-mail to a local aiosmtpd server. Each step
runs twice: the first run ("cold") starts with an empty cache for its
tool set, the second ("warm") finds the system prompt and tools cached.
The model's replies are scripted (one send call, one closing sentence),
so the counts show what rulesd sends, not what a real model would write.
The second run of a step has other record values, like the next customer:
it reads the system prompt and tools from the cache but not the records.

Token counts come from the fake server, which estimates one token per 4
characters of request JSON; the real tokenizer will differ. Cost uses the
list prices of Claude Sonnet 4.5 on Anthropic's pricing page
(platform.claude.com/docs/en/about-claude/pricing, November 2025): $3 per
million input tokens, $3.75 per million 5-minute cache writes, $0.30 per
million cache reads and $15 per million output tokens.

    python benchmarks/agent_cost.py [--database-url URL]

Run it from a checkout: it imports the fake servers from ``tests``.
Without a URL it starts an embedded Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from aiosmtpd.controller import Controller
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from rulesd.agent import ClaudeExecutor, build_providers  # noqa: E402
from rulesd.agent.claude import ModelClient  # noqa: E402
from rulesd.config import AgentSettings, EmailSettings, MessagingSettings, Settings, SmsSettings  # noqa: E402
from rulesd.db import migrate  # noqa: E402
from rulesd.db.server import start_embedded  # noqa: E402
from rulesd.engine.executor import StepRequest  # noqa: E402
from rulesd.rules.loader import load_rules  # noqa: E402
from rulesd.rules.model import EvalContext, Rule, Step  # noqa: E402
from rulesd.servicetitan.catalog import ENTITIES, related_entities  # noqa: E402
from tests.fakes.anthropic_server import AnthropicServer, text, tool_use  # noqa: E402
from tests.fakes.twilio_server import TwilioServer  # noqa: E402

PRICES = {  # US dollars per million tokens, Claude Sonnet 4.5
    "input_tokens": 3.00,
    "cache_creation_input_tokens": 3.75,
    "cache_read_input_tokens": 0.30,
    "output_tokens": 15.00,
}
NOW = datetime(2026, 3, 10, 15, 0, tzinfo=timezone.utc)  # 10:00 in Austin
CUSTOMER_ID = 1001
LOCATION_ID = 2001
SMS_BODY = ("Hi Pat, this is Lone Star Air. Just checking in about the estimate we sent for your AC "
            "condenser. Happy to answer any questions or get the work on the calendar. Reply here or "
            "call us at 512-555-0100. - The team at Lone Star Air")
EMAIL_BODY = ("Hi Pat,\n\nThank you for having us out last week. We wanted to follow up on the estimate for "
              "replacing the AC condenser at your home on Oak Street. It covers the new unit, removal of "
              "the old one, and a full system check once it is installed.\n\nIf you have any questions, "
              "or want to pick a day for the work, just reply to this e-mail or call us at 512-555-0100."
              "\n\nThe team at Lone Star Air\n512-555-0100")
TEXT_VALUES = {
    "name": "Pat Lee",
    "summary": "Customer reports the upstairs AC blows warm air in the afternoon. Technician found a failing "
               "condenser fan motor and a refrigerant leak at the service valve; quoted a condenser replacement.",
    "status": "Open",
    "reference_number": "INV-10442",
    "number": "J-20931",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a Postgres server URL; a scratch database is created on it")
    arguments = parser.parse_args()
    rules = load_rules([REPOSITORY / "rules", REPOSITORY / "examples" / "rules"])
    if not rules.ok:
        raise SystemExit("\n".join(str(error) for error in rules.errors))

    data_root = None
    server = None
    server_url = arguments.database_url
    if server_url is None:
        data_root = Path(tempfile.mkdtemp(prefix="rulesd-agent-bench-"))
        server = start_embedded(data_root / "pgdata")
        server_url = make_conninfo(server.url, dbname="postgres")
    name = f"rulesd_agent_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = make_conninfo(server_url, dbname=name)
    try:
        migrate.upgrade(database_url)
        seed(database_url)
        rows = asyncio.run(measure(database_url, rules.rules))
        print_table(rows)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if server is not None:
            server.close()
        if data_root is not None:
            shutil.rmtree(data_root, ignore_errors=True)


def seed(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO st_customers (id, name, address_state, raw) VALUES (%s, 'Pat Lee', 'TX', '{}')",
                     (CUSTOMER_ID,))
        conn.execute("INSERT INTO st_locations (id, customer_id, address_state, raw) VALUES (%s, %s, 'TX', '{}')",
                     (LOCATION_ID, CUSTOMER_ID))
        for contact_id, kind, value in ((1, "MobilePhone", "512-555-0101"), (2, "Email", "pat.lee@example.com")):
            conn.execute(
                "INSERT INTO st_customer_contacts (id, customer_id, type, value, active, raw)"
                " VALUES (%s, %s, %s, %s, true, %s)", (contact_id, CUSTOMER_ID, kind, value, Jsonb({})))


def sample_rows(rule: Rule, variant: int) -> dict[str, dict[str, Any]]:
    """Return a plausible row for every alias the rule reads, filled from the catalog's columns.

    Each ``variant`` has other ids and texts, like the next customer's step.
    """
    rows: dict[str, dict[str, Any]] = {}
    for alias, path in related_entities(rule.trigger.entity).items():
        if alias not in rule.aliases:
            continue
        entity = ENTITIES[path[-1].entity if path else rule.trigger.entity]
        row: dict[str, Any] = {}
        for column in entity.all_columns:
            if column.type in ("bigint", "integer"):
                row[column.name] = CUSTOMER_ID if column.name == "customer_id" else 40000 + 100 * variant + len(row)
            elif column.type == "numeric":
                row[column.name] = "7450.00"
            elif column.type == "boolean":
                row[column.name] = False
            elif column.type == "timestamptz":
                row[column.name] = "2026-03-03T15:00:00+00:00"
            elif column.type == "text":
                value = TEXT_VALUES.get(column.name, f"{alias} {column.name.replace('_', ' ')}")
                row[column.name] = f"{value} ({variant})" if variant else value
        rows[alias] = row
    return rows


async def measure(database_url: str, rules: tuple[Rule, ...]) -> list[tuple[str, str, str, dict[str, int]]]:
    anthropic = AnthropicServer(lifetime=600).start()
    twilio = TwilioServer(lifetime=600).start()
    mailbox_port = free_port()
    smtp = Controller(Discard(), hostname="127.0.0.1", port=mailbox_port, ready_timeout=10)
    smtp.start()
    settings = Settings(
        agent=AgentSettings(api_key="test-key", base_url=anthropic.base_url),
        messaging=MessagingSettings(dry_run=False, sms_per_day=100, sms_per_week=100, emails_per_day=100,
                                    emails_per_week=100),
        sms=SmsSettings(provider="twilio", account_sid=twilio.state.account_sid, auth_token=twilio.state.auth_token,
                        from_number="+15125550000", base_url=twilio.base_url),
        email=EmailSettings(provider="smtp", host="127.0.0.1", port=mailbox_port, security="none",
                            from_address="office@example.com"),
    )
    executor = ClaudeExecutor(settings, database_url, dry_run=False, model=ModelClient(settings.agent),
                              providers=build_providers(settings))
    results = []
    instance_id = 0
    try:
        for rule in rules:
            for step in rule.steps:
                for variant, run in enumerate(("cold", "warm")):
                    instance_id += 1
                    rows = sample_rows(rule, variant)
                    usage = await run_step(executor, anthropic, database_url, rule, step, rows, instance_id)
                    results.append((rule.id, step.name, run, usage))
    finally:
        await executor.aclose()
        anthropic.stop()
        twilio.stop()
        smtp.stop()
    return results


async def run_step(executor: ClaudeExecutor, anthropic: AnthropicServer, database_url: str, rule: Rule,
                   step: Step, rows: dict[str, dict[str, Any]], instance_id: int) -> dict[str, int]:
    if "send_sms" in step.tools:
        anthropic.push(tool_use("send_sms", {"body": SMS_BODY}), text("Sent the text to Pat."))
    else:
        anthropic.push(tool_use("send_email", {"subject": "Following up on your estimate", "body": EMAIL_BODY}),
                       text("Sent the e-mail to Pat."))
    context = EvalContext(rows=rows, now=NOW)
    request = StepRequest(
        instance_id=instance_id, step_run_id=instance_id, attempt=1, rule=rule, step=step,
        action=step.action.render(context), context=context, entity=rule.trigger.entity, entity_id=instance_id,
        customer_id=CUSTOMER_ID, location_id=LOCATION_ID, dry_run=False, database_url=database_url,
    )
    result = await executor.execute(request)
    if result.outcome != "done":
        raise SystemExit(f"{rule.id}/{step.name}: {result.outcome}: {result.detail}")
    return result.usage


def cost(usage: dict[str, int]) -> float:
    return sum(usage.get(key, 0) * price for key, price in PRICES.items()) / 1_000_000


def print_table(rows: list[tuple[str, str, str, dict[str, int]]]) -> None:
    print("| rule | step | run | input | cache write | cache read | output | est. cost (USD) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for rule_id, step_name, run, usage in rows:
        print(f"| {rule_id} | {step_name} | {run} | {usage['input_tokens']} | "
              f"{usage['cache_creation_input_tokens']} | {usage['cache_read_input_tokens']} | "
              f"{usage['output_tokens']} | {cost(usage):.5f} |")
    cached = [usage for _, _, run, usage in rows if run == "warm"]
    average = sum(cost(usage) for usage in cached) / len(cached)
    print(f"\naverage estimated cost of a step with a warm cache: ${average:.5f} "
          f"(${average * 1000:.2f} per 1,000 steps)")


class Discard:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 accepted"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
