"""The rule schema: its fast validity check must agree with jsonschema on every file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from rulesd.rules.schema import _conforms, rule_schema
from rulesd.rules.source import SourceFile, read_yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((Path(__file__).parent / "fixtures" / "bad").glob("*.yaml")) + [
    path
    for path in sorted((ROOT / "rules").glob("*.yaml")) + sorted((ROOT / "examples" / "rules").glob("*.yaml"))
    if not path.name.endswith(".test.yaml")
]

VALID = {
    "rule": "a",
    "trigger": {"on": "job.created", "to": ["Completed"]},
    "steps": [{"name": "one", "after": "1d", "do": "x", "tools": ["send_sms"]}],
}


def _mutations() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for key, value in [("enabled", 1), ("mode", True), ("tags", ["a", "a"]), ("rule", ""), ("extra", 1)]:
        cases.append({**VALID, key: value})
    cases.append({**VALID, "trigger": {"on": "job.created", "to": []}})
    cases.append({**VALID, "trigger": {"on": "job.created", "to": 5}})
    cases.append({**VALID, "steps": [{**VALID["steps"][0], "tools": ["send_sms", "send_sms"]}]})
    cases.append({**VALID, "steps": [{**VALID["steps"][0], "after": 5}]})
    cases.append({key: value for key, value in VALID.items() if key != "steps"})
    return cases


@pytest.mark.parametrize("path", RULE_FILES, ids=[path.stem for path in RULE_FILES])
def test_schema_fast_check_agrees_on_files(path: Path) -> None:
    data = read_yaml(SourceFile(str(path), path.read_text(encoding="utf-8")))
    if data is None:
        pytest.skip("YAML syntax error: no data to validate")

    valid = jsonschema.Draft202012Validator(rule_schema()).is_valid(data)

    assert (_conforms(data, rule_schema()) is True) == valid


@pytest.mark.parametrize("data", [VALID, *_mutations()])
def test_schema_fast_check_agrees_on_mutations(data: dict[str, Any]) -> None:
    valid = jsonschema.Draft202012Validator(rule_schema()).is_valid(data)

    assert (_conforms(data, rule_schema()) is True) == valid
