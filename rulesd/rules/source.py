"""Read a rule file's YAML while keeping the line and column of every key and value.

``yaml.compose`` builds a node tree that carries marks. This module turns
it into plain Python data plus a map from each key path (``('steps', 0,
'when')``) to its nodes, so later checks can point at the exact spot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from rulesd.rules.diagnostics import Diagnostic, Severity

KeyPath = tuple[Any, ...]


@dataclass
class Located:
    """The YAML nodes behind one key path: the value node and, for mapping entries, the key node."""

    value: yaml.Node
    key: yaml.Node | None = None


@dataclass
class SourceFile:
    """One rule file being loaded: its text, positions, and the diagnostics found so far."""

    path: str
    text: str
    lines: list[str] = field(init=False)
    nodes: dict[KeyPath, Located] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = self.text.splitlines()

    @property
    def has_errors(self) -> bool:
        return any(diagnostic.is_error for diagnostic in self.diagnostics)

    def report_at(
        self, line: int, column: int, message: str, *, severity: Severity = "error", code: str = ""
    ) -> None:
        """Record a diagnostic at 0-based ``line`` and ``column``."""
        source_line = self.lines[line] if 0 <= line < len(self.lines) else ""
        self.diagnostics.append(Diagnostic(self.path, line + 1, column + 1, severity, message, source_line, code))

    def report(
        self,
        key_path: KeyPath,
        message: str,
        *,
        severity: Severity = "error",
        code: str = "",
        at_key: bool = False,
        offset: int | None = None,
    ) -> None:
        """Record a diagnostic at the value of ``key_path`` (or its key, or ``offset`` chars into it).

        A path with no node of its own (a missing key) reports at its
        nearest existing parent.
        """
        located = self._nearest(key_path)
        if located is None:
            self.report_at(0, 0, message, severity=severity, code=code)
            return
        node = located.key if at_key and located.key is not None else located.value
        line, column = node.start_mark.line, node.start_mark.column
        if offset is not None and isinstance(node, yaml.ScalarNode):
            line, column = self._locate_offset(node, offset)
        self.report_at(line, column, message, severity=severity, code=code)

    def _nearest(self, key_path: KeyPath) -> Located | None:
        for length in range(len(key_path), -1, -1):
            located = self.nodes.get(tuple(key_path[:length]))
            if located is not None:
                return located
        return None

    def _locate_offset(self, node: yaml.ScalarNode, offset: int) -> tuple[int, int]:
        """Map a character offset inside a scalar's value to a 0-based line and column in the file."""
        start = node.start_mark
        value = str(node.value)
        # A plain scalar's style is None from the Python parser and '' from libyaml.
        if node.style in (None, "", "'", '"') and start.line == node.end_mark.line:
            if not node.style:
                return start.line, start.column + offset
            raw = self.text[start.index + 1 : node.end_mark.index]
            return start.line, start.column + 1 + _raw_offset(raw, offset, node.style)
        if node.style == "|":
            line_index = value.count("\n", 0, offset)
            column_in_line = offset - (value.rfind("\n", 0, offset) + 1)
            line = start.line + 1 + line_index
            indent = _indent(self.lines[line]) if line < len(self.lines) else 0
            return line, indent + column_in_line
        # Folded and multi-line plain scalars: find the text around the offset in the raw source.
        needle = value[offset : offset + 12].split("\n")[0]
        raw = self.text[start.index : node.end_mark.index]
        found = raw.find(needle) if needle else -1
        if found < 0:
            return start.line, start.column
        absolute = start.index + found
        line = self.text.count("\n", 0, absolute)
        column = absolute - (self.text.rfind("\n", 0, absolute) + 1)
        return line, column


# Length in the source of each double-quoted escape, by the character after the backslash.
_ESCAPE_LENGTHS = {"x": 4, "u": 6, "U": 10}


def _raw_offset(raw: str, offset: int, style: str) -> int:
    """Map an offset in a quoted scalar's value to the offset in its source text, counting escapes."""
    position = 0
    for _ in range(offset):
        if position >= len(raw):
            break
        if style == '"' and raw[position] == "\\" and position + 1 < len(raw):
            position += _ESCAPE_LENGTHS.get(raw[position + 1], 2)
        elif style == "'" and raw.startswith("''", position):
            position += 2
        else:
            position += 1
    return position


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


_CONSTRUCTOR = yaml.SafeLoader("")
# libyaml's parser keeps the same marks and is several times faster than the pure-Python one.
_COMPOSER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(source: SourceFile) -> Any:
    """Parse ``source`` into plain data and fill ``source.nodes``. Return None after a syntax error."""
    try:
        node = yaml.compose(source.text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # At the end of the file, the start of the unclosed construct is the useful position.
        if exc.context_mark is not None and exc.problem and "end of stream" in exc.problem:
            mark = exc.context_mark
        problem = exc.problem or "invalid YAML"
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" {exc.context} at line {exc.context_mark.line + 1}"
        if "expected key" in problem or "block end" in problem:
            problem += " (check the indentation)"
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        source.report_at(line, column, f"invalid YAML: {problem}{context}", code="yaml-syntax")
        return None
    except yaml.YAMLError as exc:
        source.report_at(0, 0, f"invalid YAML: {exc}", code="yaml-syntax")
        return None
    except RecursionError:
        source.report_at(0, 0, "invalid YAML: nested too deeply; a rule file needs only a few levels",
                         code="yaml-syntax")
        return None
    if node is None:
        source.report_at(0, 0, "empty rule file: a rule file must contain one rule mapping", code="schema")
        return None
    try:
        return _build(node, (), source)
    except RecursionError:
        source.report_at(0, 0, "invalid YAML: nested too deeply; a rule file needs only a few levels",
                         code="yaml-syntax")
        return None


def _build(
    node: yaml.Node,
    key_path: KeyPath,
    source: SourceFile,
    key: yaml.Node | None = None,
    enclosing: frozenset[int] = frozenset(),
) -> Any:
    """Build plain data from ``node``; ``enclosing`` contains the ids of the collections around it."""
    source.nodes[key_path] = Located(node, key)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in enclosing:
            # An alias to a collection that contains it (`a: &a [*a]`) would never end.
            line, column = node.start_mark.line, node.start_mark.column
            source.report_at(line, column, "invalid YAML: an alias refers to a collection that contains it",
                             code="yaml-syntax")
            return None
        enclosing = enclosing | {id(node)}
    if isinstance(node, yaml.MappingNode):
        data: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            name = _key(key_node, source)
            if not isinstance(name, str):
                line, column = key_node.start_mark.line, key_node.start_mark.column
                source.report_at(line, column, f"keys must be strings, got {name!r}", code="schema")
                continue
            if name in data:
                line, column = key_node.start_mark.line, key_node.start_mark.column
                source.report_at(line, column, f"duplicate key '{name}'", code="duplicate-key")
                continue
            data[name] = _build(value_node, key_path + (name,), source, key_node, enclosing)
        return data
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, key_path + (index,), source, None, enclosing) for index, item in enumerate(node.value)]
    return _scalar(node, source)


def _key(node: yaml.Node, source: SourceFile) -> Any:
    # YAML 1.1, which PyYAML follows, reads a plain `on`, `yes` or `off` as a
    # boolean. As a key it always means the word (`trigger: {on: ...}`).
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool" and not node.style:
        return str(node.value)
    return _scalar(node, source)


_STRING_TAG = "tag:yaml.org,2002:str"


def _scalar(node: yaml.Node, source: SourceFile) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag == _STRING_TAG:
        return node.value
    if not isinstance(node, yaml.ScalarNode):
        line, column = node.start_mark.line, node.start_mark.column
        source.report_at(line, column, "expected a plain value here", code="schema")
        return None
    try:
        return _CONSTRUCTOR.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        line, column = node.start_mark.line, node.start_mark.column
        source.report_at(line, column, f"invalid YAML value: {exc.problem}", code="yaml-syntax")
        return None
    except Exception as exc:  # noqa: BLE001
        # An explicit tag the value does not fit, such as `!!int text`. PyYAML's
        # constructors then raise ValueError, TypeError or even AttributeError
        # (`!!timestamp text` in PyYAML 6.0), so every error is caught here.
        line, column = node.start_mark.line, node.start_mark.column
        message = f"invalid YAML value {node.value!r} for tag {node.tag}: {exc}"
        source.report_at(line, column, message, code="yaml-syntax")
        return None
