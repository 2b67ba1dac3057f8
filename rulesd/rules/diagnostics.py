"""Diagnostics: one error or warning about a rule file, with its position and output formats."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from difflib import get_close_matches
from typing import Iterable, Literal, Sequence

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """A problem found in a rule file.

    ``line`` and ``column`` are 1-based; ``source_line`` is the text of that
    line without its newline, empty when the position is the whole file.
    ``code`` is a stable kebab-case identifier of the problem kind
    (``unknown-field``, ``yaml-syntax``) for tools that filter diagnostics.
    """

    path: str
    line: int
    column: int
    severity: Severity
    message: str
    source_line: str = ""
    code: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def as_error(self) -> Diagnostic:
        """Return this diagnostic with severity ``error`` (``--strict``)."""
        return Diagnostic(self.path, self.line, self.column, "error", self.message, self.source_line, self.code)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    matches = get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not matches:
        return ""
    return f" (did you mean '{matches[0]}'?)"


def format_text(diagnostic: Diagnostic) -> str:
    """Format as ``path:line:col: severity: message``, then the source line and a caret under the column."""
    head = f"{diagnostic.path}:{diagnostic.line}:{diagnostic.column}: {diagnostic.severity}: {diagnostic.message}"
    if not diagnostic.source_line:
        return head
    # Tabs stay tabs in the caret line so the caret lines up in any terminal.
    prefix = diagnostic.source_line[: max(diagnostic.column - 1, 0)]
    padding = "".join("\t" if char == "\t" else " " for char in prefix)
    return f"{head}\n    {diagnostic.source_line}\n    {padding}^"


def _escape_github_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_github_property(text: str) -> str:
    return _escape_github_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(diagnostic: Diagnostic) -> str:
    """Format as a GitHub Actions workflow command (``::error file=…,line=…,col=…::message``)."""
    properties = ",".join(
        [
            f"file={_escape_github_property(diagnostic.path)}",
            f"line={diagnostic.line}",
            f"col={diagnostic.column}",
            f"title={_escape_github_property('rulesd validate')}",
        ]
    )
    return f"::{diagnostic.severity} {properties}::{_escape_github_data(diagnostic.message)}"


def format_json(diagnostics: Sequence[Diagnostic]) -> str:
    """Format every diagnostic as one JSON array of objects."""
    return json.dumps([asdict(diagnostic) for diagnostic in diagnostics], indent=2)


def summarize(diagnostics: Sequence[Diagnostic], file_count: int, rule_count: int) -> str:
    """Return the one-line total, such as ``2 errors, 1 warning in 3 files (1 rule loaded)``."""
    errors = sum(1 for diagnostic in diagnostics if diagnostic.is_error)
    warnings = len(diagnostics) - errors
    files = f"{file_count} file" + ("" if file_count == 1 else "s")
    rules = f"{rule_count} rule" + ("" if rule_count == 1 else "s")
    if not diagnostics:
        return f"{files} valid ({rules} loaded)"
    parts = [f"{errors} error" + ("" if errors == 1 else "s")]
    parts.append(f"{warnings} warning" + ("" if warnings == 1 else "s"))
    return f"{', '.join(parts)} in {files} ({rules} loaded)"
