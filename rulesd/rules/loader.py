"""Load rule files into compiled ``Rule`` objects, collecting every problem with its position.

``rulesd validate`` and the daemon both call ``load_rules``, so a rule set
that validates is exactly the rule set the daemon runs. Loading never
stops at the first problem: every file is read and every check runs on
every part that is well-formed enough to check.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Sequence

from rulesd.durations import parse_duration
from rulesd.rules.conditions import CompiledCondition, Problem, compile_condition
from rulesd.rules.diagnostics import Diagnostic, did_you_mean
from rulesd.rules.model import Enroll, Rule, SourcePosition, Step, Trigger
from rulesd.rules.schema import describe_path, validate_schema
from rulesd.rules.scope import EVENT_KINDS, PathError, Scope
from rulesd.rules.source import KeyPath, SourceFile, read_yaml
from rulesd.rules.templates import CompiledTemplate, compile_template
from rulesd.rules.windows import DailyWindow, parse_window
from rulesd.servicetitan.catalog import ENTITIES

logger = logging.getLogger(__name__)

RULE_SUFFIXES = (".yaml", ".yml")
SCENARIO_SUFFIXES = (".test.yaml", ".test.yml")
DEFAULT_MAX_AGE = timedelta(days=1)
# Longest `after` or `max_age`. A due time past year 9999 cannot be read back into a Python datetime.
MAX_DURATION = timedelta(days=3653)

# Phrases in a step's ``do`` text that ask for a tool. They are deliberately
# narrow ("text the customer", not the noun "text") to avoid false alarms.
_TOOL_PHRASES: dict[str, re.Pattern[str]] = {
    "send_sms": re.compile(
        r"\b(?:sms|text message|text(?=\s+(?:the|them|him|her|a|an|customer|{{)))", re.IGNORECASE
    ),
    "send_email": re.compile(r"\be-?mail(?:s|ed)?\b", re.IGNORECASE),
}


@dataclass(frozen=True)
class LoadResult:
    """The rules that loaded and every diagnostic. ``ok`` is true when no diagnostic is an error."""

    rules: tuple[Rule, ...]
    diagnostics: tuple[Diagnostic, ...]
    files: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(diagnostic.is_error for diagnostic in self.diagnostics)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(diagnostic for diagnostic in self.diagnostics if diagnostic.is_error)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(diagnostic for diagnostic in self.diagnostics if not diagnostic.is_error)


def find_rule_files(paths: Sequence[Path]) -> tuple[list[Path], list[Diagnostic]]:
    """Expand directories into rule files; a file named explicitly is always a rule file.

    A directory is searched recursively, skipping hidden directories,
    ``*.test.yaml`` scenarios and YAML files with no top-level ``rule:`` key
    (a ``rulesd.yaml`` configuration or a CI workflow kept beside the rules).
    Each skipped file is logged, so a rule that lost its ``rule:`` line is visible.
    """
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for path in paths:
        if path.is_dir():
            found = [
                candidate
                for candidate in sorted(path.rglob("*"))
                if candidate.is_file()
                and candidate.name.endswith(RULE_SUFFIXES)
                and not candidate.name.endswith(SCENARIO_SUFFIXES)
                and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
            ]
            files.extend(candidate for candidate in found if _declares_rule(candidate))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Diagnostic(str(path), 1, 1, "error", f"rule path not found: {path}", code="not-found"))
    # The same file named twice (rules/ and ./rules/x.yaml) is loaded once.
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values()), problems


_RULE_KEY = re.compile(rb"^rule[ \t]*:", re.MULTILINE)


def _declares_rule(path: Path) -> bool:
    try:
        declares = _RULE_KEY.search(path.read_bytes()) is not None
    except OSError:
        return True  # let the loader report the read error with its position
    if not declares:
        logger.info("skipped %s: no top-level 'rule:' key, so it is not a rule file", path,
                    extra={"event": "rule_file_skipped"})
    return declares


def load_rules(paths: Sequence[Path]) -> LoadResult:
    """Load every rule file under ``paths`` and return the valid rules with all diagnostics.

    A rule with an error is left out of ``rules``. When two files declare
    the same rule id, the later file in path order is reported and left out.
    """
    files, diagnostics = find_rule_files(paths)
    rules: list[Rule] = []
    first_seen: dict[str, tuple[str, int]] = {}
    cache: _CompileCache = {}
    for file in files:
        rule, file_diagnostics, id_position = _load_file(file, cache)
        diagnostics.extend(file_diagnostics)
        if id_position is None:
            continue
        rule_id, line, column, source_line = id_position
        if rule_id in first_seen:
            other_path, other_line = first_seen[rule_id]
            diagnostics.append(
                Diagnostic(
                    str(file),
                    line,
                    column,
                    "error",
                    f"rule: duplicate rule id '{rule_id}', also defined in {other_path}:{other_line}",
                    source_line,
                    "duplicate-rule",
                )
            )
            continue
        first_seen[rule_id] = (str(file), line)
        if rule is not None:
            rules.append(rule)
    result = LoadResult(tuple(rules), tuple(diagnostics), tuple(str(file) for file in files))
    logger.debug(
        "loaded %d rules from %d files with %d errors",
        len(rules),
        len(files),
        len(result.errors),
        extra={"event": "rules_loaded"},
    )
    return result


# Compiled conditions and templates of one load, keyed by kind, trigger entity
# and source text: the result depends on nothing else, and rule sets repeat
# conditions such as ``not customer.do_not_mail`` across files.
_CompileCache = dict[tuple[str, str, str], tuple[Any, list[Problem]]]


def _load_file(
    file: Path, cache: _CompileCache
) -> tuple[Rule | None, list[Diagnostic], tuple[str, int, int, str] | None]:
    """Load one file and return its rule (None on error), its diagnostics and its rule id's position."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        return None, [Diagnostic(str(file), 1, 1, "error", f"cannot read rule file: {exc.strerror}", code="io")], None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"rule file is not UTF-8: invalid byte at offset {exc.start}"
        return None, [Diagnostic(str(file), 1, 1, "error", message, code="encoding")], None
    source = SourceFile(str(file), text)
    data = read_yaml(source)
    if data is None:
        return None, source.diagnostics, None
    failed = validate_schema(data, source)
    builder = _RuleBuilder(source, data if isinstance(data, dict) else {}, failed, cache)
    rule = builder.build(version=hashlib.sha256(raw).hexdigest())
    diagnostics = sorted(source.diagnostics, key=lambda diagnostic: (diagnostic.line, diagnostic.column))
    return (None if source.has_errors else rule), diagnostics, builder.id_position()


class _RuleBuilder:
    """Check and compile one rule file's data, reporting to its ``SourceFile``."""

    def __init__(
        self, source: SourceFile, data: dict[str, Any], failed: set[KeyPath], cache: _CompileCache
    ) -> None:
        self.cache = cache
        self.source = source
        self.data = data
        self.failed = failed
        self.scope: Scope | None = None

    def usable(self, key_path: KeyPath) -> bool:
        """Return whether ``key_path`` exists and neither it nor a parent failed the schema."""
        if any(key_path[: len(failed)] == failed for failed in self.failed):
            return False
        return key_path in self.source.nodes

    def get(self, key_path: KeyPath) -> Any:
        value: Any = self.data
        for part in key_path:
            value = value[part]
        return value

    def id_position(self) -> tuple[str, int, int, str] | None:
        if not self.usable(("rule",)):
            return None
        node = self.source.nodes[("rule",)].value
        line = node.start_mark.line
        source_line = self.source.lines[line] if line < len(self.source.lines) else ""
        return str(self.data["rule"]), line + 1, node.start_mark.column + 1, source_line

    def build(self, version: str) -> Rule | None:
        trigger = self._trigger()
        enroll = self._enroll(trigger)
        stop_if = self._condition(("stop_if",))
        steps = self._steps()
        if self.source.has_errors or trigger is None or enroll is None or steps is None:
            return None
        return Rule(
            id=str(self.data["rule"]),
            trigger=trigger,
            enroll=enroll,
            steps=steps,
            stop_if=stop_if,
            description=str(self.data.get("description", "")).strip(),
            enabled=bool(self.data.get("enabled", True)),
            mode=self.data.get("mode", "live"),
            tags=tuple(self.data.get("tags", ())),
            path=self.source.path,
            version=version,
            source=self.source.text,
        )

    # Trigger and enrollment.

    def _trigger(self) -> Trigger | None:
        if not self.usable(("trigger", "on")):
            return None
        on = str(self.get(("trigger", "on")))
        entity_name, _, kind = on.partition(".")
        if entity_name not in ENTITIES:
            message = f"trigger.on: unknown entity '{entity_name}'{did_you_mean(entity_name, ENTITIES)}"
            self.source.report(("trigger", "on"), message, offset=0, code="unknown-entity")
            return None
        entity = ENTITIES[entity_name]
        self.scope = Scope.for_trigger(entity_name)
        if kind not in EVENT_KINDS:
            kinds = ", ".join(EVENT_KINDS)
            message = f"trigger.on: unknown event '{kind}'{did_you_mean(kind, EVENT_KINDS)}; use one of {kinds}"
            self.source.report(("trigger", "on"), message, offset=len(entity_name) + 1, code="unknown-event")
            return None
        if kind == "status_changed" and entity.status_column is None:
            with_status = ", ".join(sorted(name for name, item in ENTITIES.items() if item.status_column))
            message = f"trigger.on: {entity_name} has no status; status_changed works on {with_status}"
            self.source.report(("trigger", "on"), message, offset=len(entity_name) + 1, code="no-status")
            return None
        from_statuses = self._statuses("from", entity_name, entity.status_values, kind)
        to_statuses = self._statuses("to", entity_name, entity.status_values, kind)
        condition = self._condition(("trigger", "if"))
        max_age = self._duration(("trigger", "max_age"), DEFAULT_MAX_AGE)
        return Trigger(entity_name, kind, from_statuses, to_statuses, condition, max_age)  # type: ignore[arg-type]

    def _statuses(self, key: str, entity_name: str, known: tuple[str, ...], kind: str) -> tuple[str, ...]:
        key_path: KeyPath = ("trigger", key)
        if not self.usable(key_path):
            return ()
        if kind != "status_changed":
            message = f"trigger.{key}: only a status_changed trigger filters on statuses; this trigger is {kind}"
            self.source.report(key_path, message, at_key=True, code="status-filter")
            return ()
        value = self.get(key_path)
        values = [value] if isinstance(value, str) else list(value)
        for index, status in enumerate(values):
            if status in known:
                continue
            item_path = key_path if isinstance(value, str) else key_path + (index,)
            message = (
                f"trigger.{key}: '{status}' is not a status of {entity_name}"
                f"{did_you_mean(status, known)}; known values: {', '.join(known)}"
            )
            self.source.report(item_path, message, code="unknown-status")
        return tuple(values)

    def _enroll(self, trigger: Trigger | None) -> Enroll | None:
        if trigger is None:
            return None
        on_retrigger = "ignore"
        if self.usable(("enroll", "on_retrigger")):
            on_retrigger = str(self.get(("enroll", "on_retrigger")))
        once = self.usable(("enroll", "once")) and self.get(("enroll", "once")) is True
        if not self.usable(("enroll", "key")):
            return Enroll(trigger.entity, "id", on_retrigger, once)  # type: ignore[arg-type]
        key = str(self.get(("enroll", "key")))
        parts = tuple(key.split("."))
        assert self.scope is not None
        if parts[0] == "event":
            message = "enroll.key: must name a row's field, not the event"
            self.source.report(("enroll", "key"), message, code="invalid-value")
            return None
        try:
            resolved = self.scope.resolve(parts)
        except PathError as exc:
            offset = sum(len(part) + 1 for part in parts[: exc.part])
            self.source.report(("enroll", "key"), f"enroll.key: {exc.message}", offset=offset, code="unknown-field")
            return None
        return Enroll(resolved.alias, resolved.name, on_retrigger, once)  # type: ignore[arg-type]

    # Conditions, templates, durations and windows.

    def _report_problems(self, key_path: KeyPath, problems: Iterable[Problem]) -> None:
        where = describe_path(key_path)
        for problem in problems:
            self.source.report(
                key_path,
                f"{where}: {problem.message}",
                severity="warning" if problem.severity == "warning" else "error",
                offset=problem.offset,
                code=problem.code,
            )

    def _condition(self, key_path: KeyPath) -> CompiledCondition | None:
        if self.scope is None or not self.usable(key_path):
            return None
        text = str(self.get(key_path))
        key = ("condition", self.scope.trigger_entity, text)
        if key not in self.cache:
            self.cache[key] = compile_condition(text, self.scope)
        compiled, problems = self.cache[key]
        self._report_problems(key_path, problems)
        return compiled  # type: ignore[no-any-return]

    def _template(self, key_path: KeyPath) -> CompiledTemplate | None:
        if self.scope is None or not self.usable(key_path):
            return None
        text = str(self.get(key_path))
        key = ("template", self.scope.trigger_entity, text)
        if key not in self.cache:
            self.cache[key] = compile_template(text, self.scope)
        compiled, problems = self.cache[key]
        self._report_problems(key_path, problems)
        return compiled  # type: ignore[no-any-return]

    def _duration(self, key_path: KeyPath, default: timedelta) -> timedelta:
        if not self.usable(key_path):
            return default
        text = str(self.get(key_path))
        try:
            value = parse_duration(text)
        except ValueError as exc:
            self.source.report(key_path, f"{describe_path(key_path)}: {exc}", code="bad-duration")
            return default
        except OverflowError:
            value = MAX_DURATION + timedelta(seconds=1)
        if value > MAX_DURATION:
            self.source.report(key_path, f"{describe_path(key_path)}: invalid duration {text!r}: "
                               f"the maximum is {MAX_DURATION.days}d (10 years)", code="bad-duration")
            return default
        return value

    def _window(self, key_path: KeyPath) -> DailyWindow | None:
        if not self.usable(key_path):
            return None
        try:
            return parse_window(self.get(key_path))
        except ValueError as exc:
            self.source.report(key_path, f"{describe_path(key_path)}: {exc}", code="bad-window")
            return None

    # Steps.

    def _steps(self) -> tuple[Step, ...] | None:
        if not self.usable(("steps",)):
            return None
        steps: list[Step] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(self.get(("steps",))):
            step = self._step(index, item, seen)
            if step is not None:
                steps.append(step)
        return tuple(steps)

    def _step(self, index: int, item: Any, seen: dict[str, int]) -> Step | None:
        base: KeyPath = ("steps", index)
        if not isinstance(item, dict) or not self.usable(base + ("name",)):
            # The schema check reported the problem, but the parts that exist are still checked.
            self._condition(base + ("when",))
            self._template(base + ("do",))
            return None
        name = str(item["name"])
        if name in seen:
            message = f"steps[{index}].name: duplicate step name '{name}', also used by steps[{seen[name]}]"
            self.source.report(base + ("name",), message, code="duplicate-step")
        else:
            seen[name] = index
        after = self._duration(base + ("after",), timedelta(0))
        window = self._window(base + ("window",))
        when = self._condition(base + ("when",))
        action = self._template(base + ("do",))
        tools: tuple[str, ...] = ()
        if self.usable(base + ("tools",)):
            # Items that failed the schema (not a string, not a known tool) are already reported.
            tools = tuple(tool for tool in item["tools"] if isinstance(tool, str))
        self._check_tools(base, tools)
        if action is None:
            return None
        node = self.source.nodes[base].value
        position = SourcePosition(self.source.path, node.start_mark.line + 1, node.start_mark.column + 1)
        return Step(name, after, action, tools, window, when, position)

    def _check_tools(self, base: KeyPath, tools: tuple[str, ...]) -> None:
        """Report an action that requests a channel whose tool the step does not list."""
        do_path = base + ("do",)
        if not self.usable(do_path) or not self.usable(base + ("tools",)):
            return
        text = str(self.get(do_path))
        for tool, phrase in _TOOL_PHRASES.items():
            match = phrase.search(text)
            if match is None or tool in tools:
                continue
            listed = ", ".join(tools) if tools else "nothing"
            message = (
                f"{describe_path(do_path)}: the action requests '{match.group(0)}' but tools lists {listed}; "
                f"add {tool} to tools"
            )
            self.source.report(do_path, message, offset=match.start(), code="tool-not-listed")
