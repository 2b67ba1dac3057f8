"""Compiled rules: the frozen objects the loader produces and the engine runs.

The loader (``rulesd.rules.loader``) turns YAML files into these; the
engine never sees YAML. Conditions and templates are compiled once at load
and evaluated against an ``EvalContext`` of current rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Mapping, Protocol

EventKind = Literal["created", "updated", "status_changed", "deleted"]
Retrigger = Literal["ignore", "restart", "parallel"]
Mode = Literal["live", "shadow"]
TOOL_NAMES = ("send_sms", "send_email")


@dataclass(frozen=True)
class EvalContext:
    """The data a condition or template is evaluated against.

    ``rows`` maps an alias (``estimate``, ``customer``, ``job``…, the names
    ``rulesd.servicetitan.catalog.related_entities`` returns) to that row's
    typed columns as a dict, or to None when the row is missing. ``event``
    has ``kind``, ``from`` and ``to`` (status values) and ``changes``
    (column -> [old, new]). ``now`` is the engine clock's time, timezone-aware UTC.
    """

    rows: Mapping[str, Mapping[str, Any] | None]
    now: datetime
    event: Mapping[str, Any] = field(default_factory=dict)


class Condition(Protocol):
    """A compiled boolean expression."""

    source: str
    # Aliases the expression reads, so the engine loads only those rows.
    aliases: frozenset[str]

    def evaluate(self, context: EvalContext) -> bool:
        """Return the expression's value; a comparison with a missing value is False."""
        ...


class Template(Protocol):
    """A compiled ``do:`` text with ``{{alias.field}}`` placeholders."""

    source: str
    aliases: frozenset[str]

    def render(self, context: EvalContext) -> str:
        """Return the text with every placeholder filled; a missing value renders empty."""
        ...


class Window(Protocol):
    """A sending window such as ``business_hours`` or ``09:00-17:00``."""

    source: str

    def next_allowed(self, at: datetime, timezone: str) -> datetime:
        """Return ``at`` when it is inside the window, else the window's next opening (UTC)."""
        ...


@dataclass(frozen=True)
class SourcePosition:
    path: str
    line: int
    column: int


@dataclass(frozen=True)
class Trigger:
    entity: str
    kind: EventKind
    from_statuses: tuple[str, ...] = ()
    to_statuses: tuple[str, ...] = ()
    condition: Condition | None = None
    max_age: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Enroll:
    """The enrollment key: ``key_alias.key_column`` (default the trigger row's id)."""

    key_alias: str
    key_column: str = "id"
    on_retrigger: Retrigger = "ignore"
    once: bool = False  # at most one enrollment per key ever, whatever its end state


@dataclass(frozen=True)
class Step:
    name: str
    after: timedelta
    action: Template
    tools: tuple[str, ...] = ()
    window: Window | None = None
    when: Condition | None = None
    position: SourcePosition | None = None


@dataclass(frozen=True)
class Rule:
    """One loaded rule. ``version`` is a hash of its source file."""

    id: str
    trigger: Trigger
    enroll: Enroll
    steps: tuple[Step, ...]
    stop_if: Condition | None = None
    description: str = ""
    enabled: bool = True
    mode: Mode = "live"
    tags: tuple[str, ...] = ()
    path: str = ""
    version: str = ""
    source: str = ""

    def step(self, name: str) -> Step | None:
        for step in self.steps:
            if step.name == name:
                return step
        return None

    @property
    def aliases(self) -> frozenset[str]:
        """Every alias any condition or template of this rule reads."""
        names: set[str] = {self.trigger.entity}
        parts: list[Any] = [self.trigger.condition, self.stop_if]
        for step in self.steps:
            parts.extend([step.when, step.action])
        for part in parts:
            if part is not None:
                names |= part.aliases
        return frozenset(names)
