"""``rulesd test``: the shipped scenarios pass, and a wrong expectation prints what differed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from rulesd.cli import main
from tests.engine.conftest import ESTIMATE_RULE, REPOSITORY

WRONG_SCENARIO = """\
rules: [{rule}]
scenarios:
  - name: expects the text a day early and no stop
    rows:
      customer: [{{id: 7, name: Pat Doe}}]
    timeline:
      - at: 0s
        create: {{estimate: {{id: 123, customer_id: 7, status: Open, subtotal: 800}}}}
      - at: 3d
        update: {{estimate: {{id: 123, status: Sold}}}}
    expect:
      - {{at: 0s, enrolled: estimate:123}}
      - {{at: 1d, step: text, entity: estimate:123}}
"""


def test_scenarios_shipped_rules_pass(database_server_url: str) -> None:
    paths = [str(REPOSITORY / "rules"), str(REPOSITORY / "examples" / "rules")]
    result = CliRunner().invoke(main, ["--database-url", database_server_url, "test", *paths])
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output
    assert "FAILED" not in result.output


def test_scenarios_report_differences(database_server_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "wrong.test.yaml"
    scenario.write_text(WRONG_SCENARIO.format(rule=ESTIMATE_RULE), encoding="utf-8")
    result = CliRunner().invoke(main, ["--database-url", database_server_url, "test", str(scenario)])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output
    assert "missing: step estimate:123 step text done at +1d" in result.output
    assert "observed instead: step estimate:123 (estimate-follow-up) step text done at +2d" in result.output
    assert "unexpected: stopped estimate:123" in result.output
    assert "0 passed, 1 failed" in result.output


def test_scenarios_invalid_file_names_the_key(database_server_url: str, tmp_path: Path) -> None:
    scenario = tmp_path / "bad.test.yaml"
    scenario.write_text(f"rules: [{ESTIMATE_RULE}]\nscenarios:\n  - name: x\n    timeline:\n      - at: 1d\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--database-url", database_server_url, "test", str(scenario)])
    assert result.exit_code == 1
    assert "scenarios[0].timeline[0]: expected exactly one of create, update, delete" in result.output
