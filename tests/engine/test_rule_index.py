"""The equality index of the rule set, and the daemon closing the executor it built."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from rulesd import daemon as daemon_module
from rulesd.daemon import Daemon, DaemonOptions
from rulesd.engine.executor import StepRequest, StepResult
from rulesd.engine.ruleset import RuleSet, if_equality, load_rule_set
from rulesd.rules.model import EvalContext
from tests.engine.conftest import ESTIMATE_RULE, fast_settings

RULE = """\
rule: {name}
trigger:
  on: estimate.created
  if: {condition}
steps:
  - name: text
    after: 1d
    do: Text the customer.
    tools: [send_sms]
"""

CONDITIONS = {
    "unit-3": "estimate.business_unit_id == 3 and estimate.total > 100",
    "unit-3-or-4": "estimate.total > 100 and estimate.business_unit_id in [3, 4]",
    "open": "estimate.status == 'Open'",
    "customer": "customer.do_not_mail == false and estimate.business_unit_id == 4",
    "no-index": "estimate.business_unit_id == 3 or estimate.total > 100",
    "not-equal": "estimate.business_unit_id != 3",
    "no-condition": "",
}


def _rule_set(tmp_path: Path) -> RuleSet:
    for name, condition in CONDITIONS.items():
        text = RULE.format(name=name, condition=condition)
        if not condition:
            text = text.replace("  if: \n", "")
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    return load_rule_set([tmp_path])


def test_if_equality_finds_top_level_conjuncts(tmp_path: Path) -> None:
    rules = _rule_set(tmp_path)
    found = {rule.id: if_equality(rule) for rule in rules.rules}
    assert found["unit-3"] is not None and found["unit-3"].values == {3}
    assert found["unit-3-or-4"] is not None and found["unit-3-or-4"].values == {3, 4}
    assert found["open"] is not None and found["open"].values == {"Open"}
    # ``== false`` is not indexed, so the next conjunct is.
    customer = found["customer"]
    assert customer is not None and (customer.alias, customer.column, customer.values) == ("estimate", "business_unit_id", {4})
    assert found["no-index"] is None
    assert found["not-equal"] is None
    assert found["no-condition"] is None


@pytest.mark.parametrize(
    ("estimate", "customer"),
    [
        ({"business_unit_id": 3, "status": "Open", "total": 500}, {"do_not_mail": False}),
        ({"business_unit_id": 4, "status": "Sold", "total": 500}, {"do_not_mail": False}),
        ({"business_unit_id": 4, "status": "Open", "total": 50}, {"do_not_mail": True}),
        ({"business_unit_id": None, "status": None, "total": None}, None),
        ({"business_unit_id": 9, "status": "Open", "total": 500}, {"do_not_mail": False}),
    ],
)
def test_dispatch_keeps_rules_whose_if_holds(
    tmp_path: Path, estimate: dict[str, Any], customer: dict[str, Any] | None
) -> None:
    rules = _rule_set(tmp_path)
    dispatch = rules.dispatch("estimate", "created", None, None)
    rows: dict[str, Any] = {"estimate": {"id": 1, **estimate}, "customer": customer}
    context = EvalContext(rows=rows, now=datetime.now(timezone.utc), event={"kind": "created"})
    candidates = dispatch.rules_for(rows)
    holding = [rule for rule in dispatch.rules if rule.trigger.condition is None or rule.trigger.condition.evaluate(context)]
    assert set(holding) <= set(candidates)
    assert [rule.id for rule in candidates] == [rule.id for rule in dispatch.rules if rule in candidates]


class ClosingExecutor:
    """An executor with ``aclose``, as the Claude executor has."""

    def __init__(self) -> None:
        self.closed = 0

    async def execute(self, request: StepRequest) -> StepResult:
        return StepResult(outcome="done")

    async def aclose(self) -> None:
        self.closed += 1


def test_daemon_closes_the_executor_it_built(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    executor = ClosingExecutor()
    monkeypatch.setattr(daemon_module, "build_executor", lambda *arguments: executor)
    daemon = Daemon(
        fast_settings(), database_url, DaemonOptions(rules_paths=[ESTIMATE_RULE], sync=False, handle_signals=False)
    )

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(daemon.run)
            with anyio.fail_after(10):
                while daemon.ready is None:
                    await anyio.sleep(0.01)
                await daemon.ready.wait()
            daemon.stop()

    anyio.run(scenario, backend="asyncio")
    assert executor.closed == 1
