"""Compile ``do:`` texts with ``{{alias.field}}`` placeholders into fast renderers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from rulesd.rules.conditions import Problem
from rulesd.rules.model import EvalContext
from rulesd.rules.scope import PathError, Scope

# A placeholder is a dotted path between double braces, with optional spaces inside.
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

Piece = Callable[[EvalContext], str]


@dataclass(frozen=True)
class CompiledTemplate:
    """A template compiled to constant text and field readers, satisfying ``rulesd.rules.model.Template``."""

    source: str
    aliases: frozenset[str]
    pieces: tuple[Piece, ...] = field(repr=False, compare=False)

    def render(self, context: EvalContext) -> str:
        return "".join(piece(context) for piece in self.pieces)


def format_value(value: Any) -> str:
    """Format a column value for a message: empty for null, times as ``YYYY-MM-DD HH:MM UTC``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def compile_template(source: str, scope: Scope) -> tuple[CompiledTemplate | None, list[Problem]]:
    """Compile ``source`` and return the template (None on any error) with every problem found."""
    problems: list[Problem] = []
    pieces: list[Piece] = []
    aliases: set[str] = set()
    position = 0
    for match in _PLACEHOLDER.finditer(source):
        _check_stray_braces(source, position, match.start(), problems)
        if match.start() > position:
            pieces.append(_literal(source[position : match.start()]))
        position = match.end()
        piece = _compile_placeholder(match, scope, problems)
        if piece is not None:
            alias, reader = piece
            aliases.add(alias)
            pieces.append(reader)
    _check_stray_braces(source, position, len(source), problems)
    if position < len(source):
        pieces.append(_literal(source[position:]))
    if problems:
        return None, problems
    return CompiledTemplate(source, frozenset(aliases), tuple(pieces)), problems


def _literal(text: str) -> Piece:
    return lambda context: text


def _check_stray_braces(source: str, start: int, end: int, problems: list[Problem]) -> None:
    opening = source.find("{{", start, end)
    if opening >= 0:
        problems.append(Problem(opening, "placeholder '{{' is not closed with '}}'", code="template"))
        return
    closing = source.find("}}", start, end)
    if closing >= 0:
        problems.append(Problem(closing, "'}}' has no opening '{{'", code="template"))


def _compile_placeholder(
    match: re.Match[str], scope: Scope, problems: list[Problem]
) -> tuple[str, Piece] | None:
    text = match.group(1)
    offset = match.start(1)
    if not _PATH.fullmatch(text) or "." not in text:
        problems.append(
            Problem(
                offset,
                f"placeholder '{{{{{text}}}}}' must name a field such as {{{{customer.name}}}}",
                code="template",
            )
        )
        return None
    parts = tuple(text.split("."))
    try:
        resolved = scope.resolve(parts)
    except PathError as exc:
        part_offset = offset + sum(len(part) + 1 for part in parts[: exc.part])
        code = "unknown-field" if exc.part > 0 else "unknown-entity"
        problems.append(Problem(part_offset, f"placeholder {{{{{text}}}}}: {exc.message}", code=code))
        return None
    alias, name = resolved.alias, resolved.name
    if alias == "event":
        return alias, lambda context: format_value(context.event.get(name))

    def read(context: EvalContext) -> str:
        row = context.rows.get(alias)
        if row is None:
            return ""
        return format_value(row.get(name))

    return alias, read
