"""``rulesd validate`` through the real CLI: output formats, exit codes and --strict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from rulesd.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "bad"
ROOT = Path(__file__).resolve().parents[2]
# GitHub's workflow command syntax: ::error file=F,line=L,col=C,title=T::MESSAGE
_GITHUB_ANNOTATION = re.compile(r"^::(error|warning) file=[^,:]+,line=\d+,col=\d+,title=[^,:]+::[^\r\n]+$")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_shipped_rules_exit_zero(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", str(ROOT / "rules"), str(ROOT / "examples")])

    assert result.exit_code == 0, result.output
    assert "valid" in result.output.splitlines()[-1]


def test_validate_default_directory(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bad.yaml").write_text((FIXTURES / "unknown-tool.yaml").read_text())

    result = runner.invoke(main, ["validate"])

    assert result.exit_code == 1
    assert result.output.startswith("rules/bad.yaml:11:23: error: steps[0].tools[1]: 'send_fax' is not one of")


def test_validate_text_shows_source_and_caret(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", str(FIXTURES / "condition-unknown-field.yaml")])

    lines = result.output.splitlines()
    assert result.exit_code == 1
    assert lines[0].endswith(":5:19: error: stop_if: unknown field 'estimate.statsu' (did you mean 'status'?)")
    assert lines[1] == "    stop_if: estimate.statsu in ['Sold', 'Dismissed']"
    assert lines[2] == "    " + " " * 18 + "^"
    assert lines[3] == "1 error, 0 warnings in 1 file (0 rules loaded)"


def test_validate_github_annotations(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", "--format", "github", str(FIXTURES)])

    annotations = [line for line in result.stdout.splitlines() if line.startswith("::")]
    assert result.exit_code == 1
    assert len(annotations) >= 40
    for line in annotations:
        assert _GITHUB_ANNOTATION.match(line), line
    assert any("line=5,col=19" in line and "statsu" in line for line in annotations)


def test_validate_json_lists_diagnostics(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", "--format", "json", str(FIXTURES / "unknown-to-status.yaml")])

    (item,) = json.loads(result.stdout)
    assert result.exit_code == 1
    assert item["line"] == 4
    assert item["column"] == 7
    assert item["severity"] == "error"
    assert item["code"] == "unknown-status"
    assert item["source_line"] == "  to: Sodl"


def test_validate_warning_passes_unless_strict(runner: CliRunner) -> None:
    path = str(FIXTURES / "warning-unknown-status-value.yaml")

    relaxed = runner.invoke(main, ["validate", path])
    strict = runner.invoke(main, ["validate", "--strict", path])

    assert relaxed.exit_code == 0
    assert ": warning: " in relaxed.output
    assert strict.exit_code == 1
    assert ": error: " in strict.output


def test_validate_missing_path_is_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["validate", str(tmp_path / "nope")])

    assert result.exit_code == 2
    assert "path not found" in result.output


def test_validate_empty_glob_is_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["validate", str(tmp_path / "*.yaml")])

    assert result.exit_code == 2
    assert "matched no files" in result.output


def test_validate_glob_expands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", str(ROOT / "examples" / "rules" / "*.yaml")])

    assert result.exit_code == 0, result.output
