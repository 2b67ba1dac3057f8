"""Directory scanning: which YAML files count as rule files."""

from __future__ import annotations

from pathlib import Path

from rulesd.rules.loader import find_rule_files, load_rules

RULE = """rule: ping
trigger:
  on: estimate.created
steps:
  - name: note
    after: 1h
    do: Note the new estimate.
"""


def test_directory_skips_files_without_rule_key(tmp_path: Path) -> None:
    (tmp_path / "ping.yaml").write_text(RULE)
    (tmp_path / "rulesd.yaml").write_text("engine:\n  tick: 5s\n")
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "validate.yml").write_text("on: push\njobs: {}\n")

    files, problems = find_rule_files([tmp_path])

    assert [f.name for f in files] == ["ping.yaml"]
    assert problems == []


def test_named_file_without_rule_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "rulesd.yaml"
    path.write_text("engine:\n  tick: 5s\n")

    result = load_rules([path])

    assert not result.ok
    assert any(d.path.endswith("rulesd.yaml") for d in result.errors)
