"""Hostile rule files: each must end in diagnostics with a position, never in an exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulesd.rules.loader import load_rules
from tests.rules.test_loader import GOOD_RULE


def _load(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "rule.yaml"
    path.write_text(text, encoding="utf-8")
    result = load_rules([path])
    assert not result.rules
    return [(diagnostic.line, diagnostic.column, diagnostic.message) for diagnostic in result.diagnostics]


@pytest.mark.parametrize(("old", "new", "message"), [
    ("after: 30m", "after: 99999999999999999999d", "the maximum is 3653d"),
    ("after: 30m", "after: 999999w", "the maximum is 3653d"),
    ("max_age: 2h", "max_age: 9999999999999999999999w", "the maximum is 3653d"),
    ("when: estimate.total >= 100", "when: estimate.created_on + 99999999999999999999d > estimate.created_on",
     "too large"),
    ("when: estimate.total >= 100", "when: " + "not " * 3000 + "true", "nested too deeply"),
])
def test_load_rules_hostile_value(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD_RULE

    diagnostics = _load(tmp_path, GOOD_RULE.replace(old, new))

    assert any(message in text for _, _, text in diagnostics), diagnostics
    assert all(line >= 1 and column >= 1 for line, column, _ in diagnostics)


def test_load_rules_recursive_alias(tmp_path: Path) -> None:
    diagnostics = _load(tmp_path, GOOD_RULE.replace("tags: [sales]", "tags: &loop [*loop]"))

    assert any("alias refers to a collection that contains it" in text for _, _, text in diagnostics), diagnostics
    assert (3, 7) in [(line, column) for line, column, _ in diagnostics]


def test_load_rules_deep_block_nesting(tmp_path: Path) -> None:
    nested = "".join(" " * (depth + 1) + "a:\n" for depth in range(3000))

    diagnostics = _load(tmp_path, "rule: deep\nz:\n" + nested + " " * 3001 + "1\n")

    assert diagnostics
