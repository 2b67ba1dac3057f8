"""Measure how many change events per second the trigger engine processes with 50 rules loaded.

Writes 50 rule files, inserts ``--events`` estimates in one transaction
(one ``created`` event each), then times ``TriggerEngine.drain()``:
claiming, matching, loading rows in bulk, evaluating ``if``, enrolling,
checking stop conditions and marking events processed.

``--layout same-trigger`` (the worst case) puts 40 of the 50 rules on
``estimate.created``, each matching one business unit, so every event is
evaluated against 40 conditions. ``--layout mixed`` spreads the rules over
four triggers (8 on ``estimate.created``; 14 each on jobs, invoices and
appointments), as a deployment's rules usually are.

    python benchmarks/engine_throughput.py [--database-url URL] [--events 20000] [--layout mixed]

Without a URL it starts an embedded Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from benchmarks.engine_common import bench_settings, insert_customer, scratch_database
from rulesd.engine.clock import SystemClock
from rulesd.engine.triggers import TriggerEngine
from rulesd.engine.watcher import RuleHolder

ESTIMATE_RULE = """\
rule: estimate-unit-{index}
trigger:
  on: estimate.created
  if: estimate.business_unit_id == {index} and estimate.total > 100
stop_if: estimate.status in ['Sold', 'Dismissed'] or customer.do_not_service
steps:
  - name: text
    after: 2d
    do: Text {{{{customer.name}}}} about {{{{estimate.name}}}}.
    tools: [send_sms]
"""

JOB_RULE = """\
rule: job-rule-{index}
trigger:
  on: job.status_changed
  to: Completed
  if: job.total > {index}
stop_if: customer.do_not_service
steps:
  - name: ask
    after: 3h
    do: Ask {{{{customer.name}}}} for a review.
    tools: [send_sms]
"""


OTHER_RULE = """\
rule: {entity}-rule-{index}
trigger:
  on: {entity}.created
  if: {condition}
stop_if: customer.do_not_service
steps:
  - name: remind
    after: 1d
    do: Remind {{{{customer.name}}}}.
    tools: [send_sms]
"""

OTHER_CONDITIONS = {"invoice": "invoice.balance > {index}", "appointment": "not appointment.unused"}


def write_rules(directory: Path, layout: str = "same-trigger") -> None:
    if layout == "same-trigger":
        for index in range(40):
            (directory / f"estimate-unit-{index}.yaml").write_text(ESTIMATE_RULE.format(index=index), encoding="utf-8")
        for index in range(10):
            (directory / f"job-rule-{index}.yaml").write_text(JOB_RULE.format(index=index), encoding="utf-8")
        return
    for index in range(8):
        (directory / f"estimate-unit-{index}.yaml").write_text(ESTIMATE_RULE.format(index=index), encoding="utf-8")
    for index in range(14):
        (directory / f"job-rule-{index}.yaml").write_text(JOB_RULE.format(index=index), encoding="utf-8")
        for entity, condition in OTHER_CONDITIONS.items():
            text = OTHER_RULE.format(entity=entity, index=index, condition=condition.format(index=index))
            (directory / f"{entity}-rule-{index}.yaml").write_text(text, encoding="utf-8")


def insert_estimates(url: str, count: int) -> None:
    with psycopg.connect(url) as conn:
        insert_customer(conn, 1)
        with conn.cursor().copy(
            "COPY st_estimates (id, customer_id, business_unit_id, status, subtotal, tax, name, raw) FROM STDIN"
        ) as copy:
            for estimate_id in range(1, count + 1):
                copy.write_row(
                    (estimate_id, 1, estimate_id % 50, "Open", 900, 0, "Furnace", json.dumps({"id": estimate_id}))
                )
        conn.commit()


async def drain(url: str, rules: Path) -> tuple[int, int, float]:
    pool: AsyncConnectionPool = AsyncConnectionPool(url, min_size=1, max_size=2, open=False)
    await pool.open(wait=True)
    try:
        clock = SystemClock()
        holder = RuleHolder([rules], pool, clock)
        await holder.reload(initial=True)
        engine = TriggerEngine(pool, holder.get, clock, bench_settings().engine)
        started = time.perf_counter()
        result = await engine.drain()
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return result.events, len(result.enrolled), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="Postgres server to create the scratch database on")
    parser.add_argument("--events", type=int, default=20_000, help="estimates to insert (default 20000)")
    parser.add_argument("--layout", choices=["same-trigger", "mixed"], default="same-trigger", help="how the 50 rules are spread over triggers")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="rulesd-bench-rules-") as directory, scratch_database(arguments.database_url) as url:
        write_rules(Path(directory), arguments.layout)
        insert_estimates(url, arguments.events)
        events, enrolled, elapsed = anyio.run(drain, url, Path(directory), backend="asyncio")
    print(f"rules loaded: 50 ({arguments.layout}); events: {events}; enrollments: {enrolled}")
    print(f"drain: {elapsed:.2f} s, {events / elapsed:,.0f} events/s")


if __name__ == "__main__":
    main()
