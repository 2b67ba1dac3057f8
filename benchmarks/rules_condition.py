"""Measure the time to evaluate one compiled condition, in microseconds per call.

Run: ``python benchmarks/rules_condition.py [--number 200000]``. Each
condition is evaluated ``--number`` times with ``timeit``; the best of five
repeats is reported.
"""

from __future__ import annotations

import argparse
import timeit
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from rulesd.rules.conditions import compile_condition
from rulesd.rules.model import EvalContext
from rulesd.rules.scope import Scope

CONDITIONS = (
    "estimate.status in ['Sold', 'Dismissed']",
    "estimate.total >= 500 and not customer.do_not_mail",
    "estimate.total > 0 and age(estimate.created_on) > 14d",
    "customer.name contains 'LLC' or lower(customer.name) starts_with 'acme'",
    "event.from == 'Open' and event.to in ['Sold', 'Dismissed'] and location.address_state is not null",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=200_000, help="evaluations per timed repeat")
    arguments = parser.parse_args()

    now = datetime(2026, 12, 4, 15, 0, tzinfo=timezone.utc)
    context = EvalContext(
        rows={
            "estimate": {"status": "Open", "total": Decimal("612.50"), "created_on": now - timedelta(days=20)},
            "customer": {"name": "Acme Heating LLC", "do_not_mail": False},
            "location": {"address_state": "TX"},
        },
        now=now,
        event={"kind": "status_changed", "from": "Open", "to": "Sold"},
    )
    scope = Scope.for_trigger("estimate")
    for source in CONDITIONS:
        condition, problems = compile_condition(source, scope)
        if condition is None:
            raise SystemExit(f"benchmark condition failed to compile: {source}: {problems}")
        timer = timeit.Timer(lambda: condition.evaluate(context))
        best = min(timer.repeat(repeat=5, number=arguments.number)) / arguments.number
        print(f"{best * 1e6:6.2f} µs  {source}")


if __name__ == "__main__":
    main()
