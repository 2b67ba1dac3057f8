"""Each bad fixture contains one defect, and its last line states the one diagnostic it must produce."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rulesd.rules.loader import load_rules

FIXTURES = Path(__file__).parent / "fixtures"
BAD_FIXTURES = sorted((FIXTURES / "bad").glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (\d+):(\d+): (error|warning): (.+)$")


def _expectation(path: Path) -> tuple[int, int, str, str]:
    last_line = path.read_text(encoding="utf-8").rstrip("\n").splitlines()[-1]
    match = _EXPECT.match(last_line)
    assert match, f"{path.name} must end with '# expect: LINE:COL: SEVERITY: MESSAGE'"
    return int(match.group(1)), int(match.group(2)), match.group(3), match.group(4)


def test_fixture_corpus_has_forty_defects() -> None:
    assert len(BAD_FIXTURES) >= 40


@pytest.mark.parametrize("path", BAD_FIXTURES, ids=[path.stem for path in BAD_FIXTURES])
def test_fixture_reports_expected_diagnostic(path: Path) -> None:
    line, column, severity, message = _expectation(path)

    result = load_rules([path])

    assert len(result.diagnostics) == 1, [diagnostic.message for diagnostic in result.diagnostics]
    diagnostic = result.diagnostics[0]
    assert diagnostic.message == message
    assert (diagnostic.line, diagnostic.column) == (line, column)
    assert diagnostic.severity == severity
    assert diagnostic.path == str(path)
    assert diagnostic.source_line == path.read_text(encoding="utf-8").splitlines()[line - 1] or line == 1


@pytest.mark.parametrize("path", BAD_FIXTURES, ids=[path.stem for path in BAD_FIXTURES])
def test_fixture_rule_excluded_only_on_error(path: Path) -> None:
    _, _, severity, _ = _expectation(path)

    result = load_rules([path])

    assert result.ok == (severity == "warning")
    assert len(result.rules) == (1 if severity == "warning" else 0)


def test_shipped_rules_validate_cleanly() -> None:
    root = Path(__file__).resolve().parents[2]

    result = load_rules([root / "rules", root / "examples"])

    assert result.diagnostics == ()
    assert len(result.rules) >= 6
    assert "estimate-follow-up" in {rule.id for rule in result.rules}
