"""Parse, type-check and compile rule conditions into Python closures.

The grammar is ``grammar.lark``. Each tree node compiles once, at load,
into a closure taking an ``EvalContext``, so evaluation walks no tree.

Null semantics: a path whose row is missing, or whose column is null,
evaluates to None. Every comparison (``== != < <= > >= in not in contains
starts_with ends_with matches``) with a None operand is False, never an
exception, so ``not (x == 1)`` is True when ``x`` is null. Arithmetic and
functions given None return None. ``and``, ``or`` and ``not`` treat None as
false. Division by zero returns None.
"""

from __future__ import annotations

import logging
import operator
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from rulesd.durations import parse_duration
from rulesd.rules.diagnostics import did_you_mean
from rulesd.rules.model import EvalContext
from rulesd.rules.scope import PathError, Scope

logger = logging.getLogger(__name__)

Evaluator = Callable[[EvalContext], Any]

_GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")

# Readable names for the grammar's terminals in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a field path",
    "STRING": "a string",
    "NUMBER": "a number",
    "DURATION": "a duration",
    "COMPARE_OP": "a comparison",
    "ADD_OP": "+ or -",
    "MUL_OP": "* / or %",
    "$END": "the end of the condition",
}


@dataclass(frozen=True)
class Problem:
    """A parse or type error at ``offset`` (0-based character index) inside a condition or template."""

    offset: int
    message: str
    severity: str = "error"
    code: str = "condition-type"


@dataclass(frozen=True)
class CompiledCondition:
    """A condition compiled to a closure, satisfying ``rulesd.rules.model.Condition``."""

    source: str
    aliases: frozenset[str]
    function: Evaluator = field(repr=False, compare=False)

    def evaluate(self, context: EvalContext) -> bool:
        try:
            return self.function(context) is True
        except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            # A row value of an unexpected Python type (a float where the
            # catalog promises Decimal, say) makes the condition false
            # instead of failing the caller, and is logged once per condition.
            _log_evaluation_error(self.source, exc)
            return False


_logged_failures: set[str] = set()


def _log_evaluation_error(source: str, exc: Exception) -> None:
    if source in _logged_failures:
        return
    _logged_failures.add(source)
    logger.warning(
        "condition %r failed on a row value and counts as false: %s",
        source,
        exc,
        extra={"event": "condition_evaluation_failed", "condition": source},
    )


@dataclass(frozen=True)
class _Node:
    """One compiled subexpression: its closure, value kind and, for constants, the value."""

    function: Evaluator
    kind: str
    offset: int
    constant: bool = False
    value: Any = None
    status_values: tuple[str, ...] = ()
    status_entity: str = ""


class _CompileError(Exception):
    """Raised inside the compiler to abandon one subexpression after recording a problem."""


@lru_cache(maxsize=1)
def _parser() -> Lark:
    # Offsets come from each subtree's first token (``_offset``) because
    # propagate_positions makes every parse about a third slower.
    return Lark(_GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr")


def parse_condition(source: str) -> tuple[Tree[Any] | None, list[Problem]]:
    """Parse ``source`` into a Lark tree, or return None and the parse problem."""
    try:
        return _parser().parse(source), []
    except UnexpectedInput as exc:
        return None, [_parse_problem(source, exc)]


_BARE_WORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")
_KEYWORDS = ("and", "or", "not", "in", "contains", "starts_with", "ends_with", "matches", "is", "null", "true", "false")


def _parse_problem(source: str, exc: UnexpectedInput) -> Problem:
    offset = max(getattr(exc, "pos_in_stream", 0) or 0, 0)
    expected_names = set(getattr(exc, "expected", ()) or ())
    at_end = isinstance(exc, UnexpectedEOF) or offset >= len(source)
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        at_end = True
    if expected_names and expected_names <= {"DOT", "LPAR"}:
        return _bare_word_problem(source, len(source) if at_end else offset)
    if at_end:
        expected = _describe_expected(expected_names)
        return Problem(len(source), f"condition ends too early; expected {expected}", code="condition-syntax")
    if isinstance(exc, UnexpectedCharacters):
        message = f"unexpected character '{source[offset]}'{_character_hint(source, offset)}"
        return Problem(offset, message, code="condition-syntax")
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = _describe_expected(expected_names)
        hint = _token_hint(str(token), token.type, expected_names)
        return Problem(offset, f"unexpected '{token}'{hint or '; expected ' + expected}", code="condition-syntax")
    return Problem(offset, "invalid condition", code="condition-syntax")


def _bare_word_problem(source: str, offset: int) -> Problem:
    """Explain a word that is neither a path nor a function, such as ``Sold`` in ``x == Sold``."""
    match = _BARE_WORD.search(source[:offset])
    if match is None:
        return Problem(offset, "expected '.' or '(' after a name", code="condition-syntax")
    word = match.group(1)
    message = f"'{word}' is not a field path: quote a string ('{word}') or write alias.field"
    return Problem(match.start(1), message, code="condition-syntax")


def _character_hint(source: str, offset: int) -> str:
    char = source[offset]
    if char == "=":
        return "; use == to compare"
    if char in "&|!":
        return "; use and, or, not"
    if char in "'\"":
        return "; the string is not closed"
    if char == "$":
        return "; write amounts as plain numbers, such as 500"
    return ""


def _token_hint(text: str, kind: str, expected: set[str]) -> str:
    if text.lower() in _KEYWORDS and text != text.lower():
        return f"; keywords are lower case: {text.lower()}"
    if kind == "COMMA" and "RPAR" in expected:
        return "; write a list in square brackets, such as ['Sold', 'Dismissed']"
    if kind == "STRING" and expected <= {"NOT", "NULL"}:
        return "; 'is' only tests for null, use == to compare"
    if kind == "NAME" and text in ("s", "m", "h", "d", "w", "seconds", "minutes", "hours", "days", "weeks"):
        return "; write a duration without a space, such as 2d"
    return ""


def _describe_expected(names: Any) -> str:
    described: list[str] = []
    for name in sorted(names):
        if name in _TERMINAL_NAMES:
            text = _TERMINAL_NAMES[name]
        else:
            try:
                pattern = _parser().get_terminal(name).pattern
                text = f"'{pattern.value}'"
            except KeyError:
                text = name.lower()
        if text not in described:
            described.append(text)
    if len(described) > 8:
        described = described[:8] + ["..."]
    return ", ".join(described) if described else "more input"


def compile_condition(source: str, scope: Scope) -> tuple[CompiledCondition | None, list[Problem]]:
    """Parse, type-check and compile ``source`` for rules triggered on ``scope``'s entity.

    Returns the compiled condition (None when any error was found) and every
    problem found, errors and warnings.
    """
    try:
        tree, problems = parse_condition(source)
        if tree is None:
            return None, problems
        compiler = _Compiler(scope)
        try:
            node = compiler.compile(tree)
        except _CompileError:
            node = None
    except RecursionError:
        # The compiler recurses once per operator, so thousands of nested `not` or parentheses exhaust the stack.
        return None, [Problem(0, "the condition is nested too deeply; split it or remove repeated 'not' and "
                                 "parentheses", code="condition-syntax")]
    problems = compiler.problems
    if node is not None and node.kind not in ("boolean", "null"):
        problems.append(Problem(0, f"a condition must be true or false, but this is a {_kind_name(node.kind)}"))
    if node is None or any(problem.severity == "error" for problem in problems):
        return None, problems
    function = node.function
    return CompiledCondition(source, frozenset(compiler.aliases), function), problems


def _kind_name(kind: str) -> str:
    if kind.startswith("list:"):
        return f"list of {kind[5:]}s"
    return kind


def _comparable(left: str, right: str) -> bool:
    if "null" in (left, right) or "any" in (left, right):
        return True
    if left.startswith("list:") and right.startswith("list:"):
        return _comparable(left[5:], right[5:])
    return left == right


def _null_safe_binary(left: _Node, right: _Node, function: Callable[[Any, Any], Any]) -> Evaluator:
    """Return a closure applying ``function`` to both operands, or returning None when either is None."""
    left_function, right_function = left.function, right.function
    if right.constant:
        constant = right.value

        def with_constant(context: EvalContext) -> Any:
            value = left_function(context)
            if value is None:
                return None
            return function(value, constant)

        return with_constant

    def evaluate(context: EvalContext) -> Any:
        first = left_function(context)
        if first is None:
            return None
        second = right_function(context)
        if second is None:
            return None
        return function(first, second)

    return evaluate


def _as_predicate(evaluate: Evaluator) -> Evaluator:
    def predicate(context: EvalContext) -> bool:
        return evaluate(context) is True

    return predicate


_COMPARE_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _safe_divide(left: Any, right: Any) -> Any:
    if not right:
        return None
    if isinstance(left, timedelta):
        return left / float(right)
    return left / right


def _safe_modulo(left: Any, right: Any) -> Any:
    if not right:
        return None
    return left % right


def _scale(left: Any, right: Any) -> Any:
    # timedelta * Decimal is not defined, so a duration is scaled by a float.
    if isinstance(left, timedelta):
        return left * float(right)
    if isinstance(right, timedelta):
        return right * float(left)
    return left * right


# The result kind of each arithmetic operator for each pair of operand kinds.
_ARITHMETIC: dict[tuple[str, str, str], tuple[str, Callable[[Any, Any], Any]]] = {
    ("+", "number", "number"): ("number", operator.add),
    ("-", "number", "number"): ("number", operator.sub),
    ("*", "number", "number"): ("number", operator.mul),
    ("/", "number", "number"): ("number", _safe_divide),
    ("%", "number", "number"): ("number", _safe_modulo),
    ("+", "time", "duration"): ("time", operator.add),
    ("+", "duration", "time"): ("time", operator.add),
    ("-", "time", "duration"): ("time", operator.sub),
    ("-", "time", "time"): ("duration", operator.sub),
    ("+", "duration", "duration"): ("duration", operator.add),
    ("-", "duration", "duration"): ("duration", operator.sub),
    ("*", "duration", "number"): ("duration", _scale),
    ("*", "number", "duration"): ("duration", _scale),
    ("/", "duration", "number"): ("duration", _safe_divide),
    ("/", "duration", "duration"): ("number", _safe_divide),
    ("+", "string", "string"): ("string", operator.add),
}


class _Compiler:
    """Compile one condition tree, recording every problem instead of stopping at the first."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.problems: list[Problem] = []
        self.aliases: set[str] = set()

    def fail(self, offset: int, message: str, code: str = "condition-type") -> _CompileError:
        self.problems.append(Problem(offset, message, code=code))
        return _CompileError(message)

    def warn(self, offset: int, message: str, code: str) -> None:
        self.problems.append(Problem(offset, message, severity="warning", code=code))

    def compile(self, tree: Tree[Any] | Token) -> _Node:
        if isinstance(tree, Token):
            raise self.fail(tree.start_pos or 0, f"unexpected '{tree}'")
        method = getattr(self, f"_compile_{tree.data}", None)
        if method is None:
            raise self.fail(_offset(tree), f"unsupported expression '{tree.data}'")
        node: _Node = method(tree)
        return node

    def compile_both(self, left: Tree[Any], right: Tree[Any]) -> tuple[_Node, _Node]:
        """Compile both operands, so an error in the left one does not hide one in the right."""
        left_node: _Node | None = None
        right_node: _Node | None = None
        failed = False
        try:
            left_node = self.compile(left)
        except _CompileError:
            failed = True
        try:
            right_node = self.compile(right)
        except _CompileError:
            failed = True
        if failed or left_node is None or right_node is None:
            raise _CompileError("operand failed")
        return left_node, right_node

    # Literals.

    def _constant(self, tree: Tree[Any], kind: str, value: Any) -> _Node:
        return _Node(lambda context: value, kind, _offset(tree), constant=True, value=value)

    def _compile_string(self, tree: Tree[Any]) -> _Node:
        text = str(tree.children[0])
        return self._constant(tree, "string", _unquote(text))

    def _compile_number(self, tree: Tree[Any]) -> _Node:
        try:
            value = Decimal(str(tree.children[0]))
        except InvalidOperation:
            raise self.fail(_offset(tree), f"invalid number '{tree.children[0]}'") from None
        return self._constant(tree, "number", value)

    def _compile_duration(self, tree: Tree[Any]) -> _Node:
        text = str(tree.children[0])
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise self.fail(_offset(tree), str(exc), code="bad-duration") from None
        except OverflowError:
            raise self.fail(_offset(tree), f"invalid duration {text!r}: too large", code="bad-duration") from None
        return self._constant(tree, "duration", value)

    def _compile_true(self, tree: Tree[Any]) -> _Node:
        return self._constant(tree, "boolean", True)

    def _compile_false(self, tree: Tree[Any]) -> _Node:
        return self._constant(tree, "boolean", False)

    def _compile_null(self, tree: Tree[Any]) -> _Node:
        return self._constant(tree, "null", None)

    def _compile_list(self, tree: Tree[Any]) -> _Node:
        items = [child for child in tree.children if isinstance(child, Tree)]
        nodes: list[_Node] = []
        failed = False
        for item in items:
            try:
                nodes.append(self.compile(item))
            except _CompileError:
                failed = True
        if failed:
            raise _CompileError("list item failed")
        kinds = {node.kind for node in nodes if node.kind != "null"}
        if len(kinds) > 1:
            listed = ", ".join(sorted(kinds))
            raise self.fail(_offset(tree), f"list items must all be of one kind, got {listed}")
        kind = "list:" + (kinds.pop() if kinds else "any")
        if all(node.constant for node in nodes):
            values = tuple(node.value for node in nodes)
            return _Node(lambda context: values, kind, _offset(tree), constant=True, value=values)
        functions = tuple(node.function for node in nodes)

        def build(context: EvalContext) -> tuple[Any, ...]:
            return tuple(function(context) for function in functions)

        return _Node(build, kind, _offset(tree))

    # Paths and calls.

    def _compile_path(self, tree: Tree[Any]) -> _Node:
        tokens = [child for child in tree.children if isinstance(child, Token)]
        parts = tuple(str(token) for token in tokens)
        try:
            resolved = self.scope.resolve(parts)
        except PathError as exc:
            part = min(exc.part, len(tokens) - 1)
            code = "unknown-field" if exc.part > 0 else "unknown-entity"
            raise self.fail(tokens[part].start_pos or 0, exc.message, code=code) from None
        self.aliases.add(resolved.alias)
        alias, name = resolved.alias, resolved.name
        if alias == "event":

            def read_event(context: EvalContext) -> Any:
                return context.event.get(name)

            function: Evaluator = read_event
        else:

            def read_row(context: EvalContext) -> Any:
                row = context.rows.get(alias)
                if row is None:
                    return None
                return row.get(name)

            function = read_row
        return _Node(
            function,
            resolved.kind,
            _offset(tree),
            status_values=resolved.status_values,
            status_entity=resolved.status_entity,
        )

    def _compile_call(self, tree: Tree[Any]) -> _Node:
        name_token = tree.children[0]
        name = str(name_token)
        argument_trees = [child for child in tree.children[1:] if child is not None]
        arguments: list[_Node] = []
        failed = False
        for argument in argument_trees:
            try:
                arguments.append(self.compile(argument))
            except _CompileError:
                failed = True
        if failed:
            raise _CompileError("argument failed")
        signature = _FUNCTIONS.get(name)
        if signature is None:
            known = ", ".join(f"{function}()" for function in sorted(_FUNCTIONS))
            raise self.fail(
                _offset(tree), f"unknown function '{name}()'{did_you_mean(name, _FUNCTIONS)}; known: {known}"
            )
        return signature(self, tree, arguments)

    # Operators.

    def _compile_or_(self, tree: Tree[Any]) -> _Node:
        left, right = self.compile_both(tree.children[0], tree.children[1])
        self._expect_boolean(left, "or")
        self._expect_boolean(right, "or")
        first, second = left.function, right.function

        def either(context: EvalContext) -> bool:
            return bool(first(context)) or bool(second(context))

        return _Node(either, "boolean", _offset(tree))

    def _compile_and_(self, tree: Tree[Any]) -> _Node:
        left, right = self.compile_both(tree.children[0], tree.children[1])
        self._expect_boolean(left, "and")
        self._expect_boolean(right, "and")
        first, second = left.function, right.function

        def both(context: EvalContext) -> bool:
            return bool(first(context)) and bool(second(context))

        return _Node(both, "boolean", _offset(tree))

    def _compile_not_(self, tree: Tree[Any]) -> _Node:
        operand = self.compile(tree.children[0])
        self._expect_boolean(operand, "not")
        function = operand.function

        def negation(context: EvalContext) -> bool:
            return not function(context)

        return _Node(negation, "boolean", _offset(tree))

    def _expect_boolean(self, node: _Node, keyword: str) -> None:
        if node.kind not in ("boolean", "null", "any"):
            raise self.fail(node.offset, f"'{keyword}' needs true or false on each side, got a {_kind_name(node.kind)}")

    def _compile_compare(self, tree: Tree[Any]) -> _Node:
        left_tree, op_token, right_tree = tree.children
        left, right = self.compile_both(left_tree, right_tree)
        symbol = str(op_token)
        if left.kind == "null" or right.kind == "null":
            fix = "is null" if symbol == "==" else "is not null"
            raise self.fail(_offset(tree), f"a comparison with null is always false: use '{fix}'")
        if not _comparable(left.kind, right.kind):
            raise self.fail(
                op_token.start_pos or _offset(tree),
                f"cannot compare a {_kind_name(left.kind)} with a {_kind_name(right.kind)} using '{symbol}'",
            )
        unordered = left.kind in ("boolean", "json") or left.kind.startswith("list:")
        if symbol not in ("==", "!=") and unordered:
            raise self.fail(op_token.start_pos or _offset(tree), f"'{symbol}' cannot order {_kind_name(left.kind)}s")
        self._check_status(left, right)
        self._check_status(right, left)
        function = _null_safe_binary(left, right, _COMPARE_OPERATORS[symbol])
        return _Node(_as_predicate(function), "boolean", _offset(tree))

    def _membership(self, tree: Tree[Any], negate: bool) -> _Node:
        left, right = self.compile_both(tree.children[0], tree.children[1])
        keyword = "not in" if negate else "in"
        if right.kind.startswith("list:"):
            if not _comparable(left.kind, right.kind[5:]):
                raise self.fail(
                    right.offset, f"'{keyword}' compares a {_kind_name(left.kind)} with a {_kind_name(right.kind)}"
                )
            self._check_status(left, right)
        elif right.kind != "json":
            hint = "; use 'contains' to search a string" if right.kind == "string" else ""
            raise self.fail(
                right.offset, f"'{keyword}' needs a list on its right, got a {_kind_name(right.kind)}{hint}"
            )
        if right.constant:
            members = frozenset(right.value) if _hashable(right.value) else right.value
            left_function = left.function

            def in_constant(context: EvalContext) -> bool:
                value = left_function(context)
                if value is None:
                    return False
                return (value not in members) if negate else (value in members)

            return _Node(in_constant, "boolean", _offset(tree))
        function = _null_safe_binary(left, right, (lambda a, b: a not in b) if negate else (lambda a, b: a in b))
        return _Node(_as_predicate(function), "boolean", _offset(tree))

    def _compile_in_(self, tree: Tree[Any]) -> _Node:
        return self._membership(tree, negate=False)

    def _compile_not_in(self, tree: Tree[Any]) -> _Node:
        return self._membership(tree, negate=True)

    def _compile_contains(self, tree: Tree[Any]) -> _Node:
        left, right = self.compile_both(tree.children[0], tree.children[1])
        if left.kind == "string":
            self._expect_kind(right, "string", "contains")
        elif left.kind.startswith("list:"):
            if not _comparable(left.kind[5:], right.kind):
                message = f"'contains' looks for a {left.kind[5:]} in this list, got a {_kind_name(right.kind)}"
                raise self.fail(right.offset, message)
        elif left.kind != "json":
            message = f"'contains' needs a string or a list on its left, got a {_kind_name(left.kind)}"
            raise self.fail(left.offset, message)
        function = _null_safe_binary(left, right, lambda a, b: b in a)
        return _Node(_as_predicate(function), "boolean", _offset(tree))

    def _string_test(self, tree: Tree[Any], keyword: str, test: Callable[[str, str], bool]) -> _Node:
        left, right = self.compile_both(tree.children[0], tree.children[1])
        self._expect_kind(left, "string", keyword)
        self._expect_kind(right, "string", keyword)
        function = _null_safe_binary(left, right, test)
        return _Node(_as_predicate(function), "boolean", _offset(tree))

    def _compile_starts_with(self, tree: Tree[Any]) -> _Node:
        return self._string_test(tree, "starts_with", str.startswith)

    def _compile_ends_with(self, tree: Tree[Any]) -> _Node:
        return self._string_test(tree, "ends_with", str.endswith)

    def _compile_matches(self, tree: Tree[Any]) -> _Node:
        left, right = self.compile_both(tree.children[0], tree.children[1])
        self._expect_kind(left, "string", "matches")
        if not (right.constant and right.kind == "string"):
            raise self.fail(right.offset, "'matches' needs a regular expression written as a string literal")
        try:
            pattern = re.compile(right.value)
        except re.error as exc:
            raise self.fail(right.offset, f"invalid regular expression {right.value!r}: {exc}") from None
        left_function = left.function

        def search(context: EvalContext) -> bool:
            value = left_function(context)
            if value is None:
                return False
            return pattern.search(value) is not None

        return _Node(search, "boolean", _offset(tree))

    def _compile_is_null(self, tree: Tree[Any]) -> _Node:
        function = self.compile(tree.children[0]).function
        return _Node(lambda context: function(context) is None, "boolean", _offset(tree))

    def _compile_is_not_null(self, tree: Tree[Any]) -> _Node:
        function = self.compile(tree.children[0]).function
        return _Node(lambda context: function(context) is not None, "boolean", _offset(tree))

    def _compile_arithmetic(self, tree: Tree[Any]) -> _Node:
        left_tree, op_token, right_tree = tree.children
        left, right = self.compile_both(left_tree, right_tree)
        symbol = str(op_token)
        entry = _ARITHMETIC.get((symbol, left.kind, right.kind))
        if entry is None:
            raise self.fail(
                op_token.start_pos or _offset(tree),
                f"cannot apply '{symbol}' to a {_kind_name(left.kind)} and a {_kind_name(right.kind)}",
            )
        kind, function = entry
        return _Node(_null_safe_binary(left, right, function), kind, _offset(tree))

    def _compile_negate(self, tree: Tree[Any]) -> _Node:
        operand = self.compile(tree.children[0])
        if operand.kind not in ("number", "duration"):
            raise self.fail(operand.offset, f"cannot negate a {_kind_name(operand.kind)}")
        if operand.constant:
            value = -operand.value
            return _Node(lambda context: value, operand.kind, _offset(tree), constant=True, value=value)
        function = operand.function

        def negative(context: EvalContext) -> Any:
            value = function(context)
            return None if value is None else -value

        return _Node(negative, operand.kind, _offset(tree))

    # Checks.

    def _expect_kind(self, node: _Node, kind: str, keyword: str) -> None:
        if node.kind not in (kind, "null", "any"):
            raise self.fail(node.offset, f"'{keyword}' needs a {kind}, got a {_kind_name(node.kind)}")

    def _check_status(self, field_node: _Node, other: _Node) -> None:
        """Warn when a status field is compared with a value the catalog does not list."""
        if not field_node.status_values or not other.constant:
            return
        values = other.value if isinstance(other.value, tuple) else (other.value,)
        known = ", ".join(field_node.status_values)
        expected_kind = f"a known status of {field_node.status_entity}"
        if field_node.status_entity == "event":
            expected_kind = "an event kind"
        for value in values:
            if isinstance(value, str) and value not in field_node.status_values:
                self.warn(other.offset, f"'{value}' is not {expected_kind}; known values: {known}", code="unknown-status")


def _hashable(values: Any) -> bool:
    try:
        frozenset(values)
    except TypeError:
        return False
    return True


def _offset(tree: Tree[Any] | Token) -> int:
    """Return the 0-based offset of the first token in ``tree``."""
    node: Any = tree
    while isinstance(node, Tree):
        children = [child for child in node.children if child is not None]
        if not children:
            return 0
        node = children[0]
    return int(node.start_pos or 0)


def _unquote(text: str) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    return re.sub(r"\\(.)", lambda match: {"n": "\n", "t": "\t"}.get(match.group(1), match.group(1)), body)


# Functions: each checks its argument kinds and returns the compiled call.

Signature = Callable[[_Compiler, Tree[Any], Sequence[_Node]], _Node]


def _expect_arguments(
    compiler: _Compiler,
    tree: Tree[Any],
    name: str,
    arguments: Sequence[_Node],
    kinds: Sequence[tuple[str, ...]],
) -> None:
    if len(arguments) != len(kinds):
        count = len(kinds)
        noun = "argument" if count == 1 else "arguments"
        raise compiler.fail(_offset(tree), f"{name}() takes {count} {noun}, got {len(arguments)}")
    for argument, allowed in zip(arguments, kinds):
        kind = "list" if argument.kind.startswith("list:") else argument.kind
        if kind not in allowed and kind not in ("null", "any"):
            expected = " or ".join(allowed)
            raise compiler.fail(argument.offset, f"{name}() needs a {expected}, got a {_kind_name(argument.kind)}")


def _call_now(compiler: _Compiler, tree: Tree[Any], arguments: Sequence[_Node]) -> _Node:
    _expect_arguments(compiler, tree, "now", arguments, [])

    def now(context: EvalContext) -> datetime:
        return context.now

    return _Node(now, "time", _offset(tree))


def _call_age(compiler: _Compiler, tree: Tree[Any], arguments: Sequence[_Node]) -> _Node:
    _expect_arguments(compiler, tree, "age", arguments, [("time",)])
    function = arguments[0].function

    def age(context: EvalContext) -> timedelta | None:
        value = function(context)
        if value is None:
            return None
        return context.now - value

    return _Node(age, "duration", _offset(tree))


def _unary_function(name: str, kinds: tuple[str, ...], result: str, apply: Callable[[Any], Any]) -> Signature:
    def signature(compiler: _Compiler, tree: Tree[Any], arguments: Sequence[_Node]) -> _Node:
        _expect_arguments(compiler, tree, name, arguments, [kinds])
        function = arguments[0].function
        kind = arguments[0].kind if result == "same" else result

        def call(context: EvalContext) -> Any:
            value = function(context)
            return None if value is None else apply(value)

        return _Node(call, kind, _offset(tree))

    return signature


def _call_coalesce(compiler: _Compiler, tree: Tree[Any], arguments: Sequence[_Node]) -> _Node:
    if len(arguments) < 2:
        raise compiler.fail(_offset(tree), f"coalesce() takes 2 or more arguments, got {len(arguments)}")
    kinds = {argument.kind for argument in arguments if argument.kind != "null"}
    if len(kinds) > 1:
        raise compiler.fail(_offset(tree), f"coalesce() arguments must be of one kind, got {', '.join(sorted(kinds))}")
    functions = tuple(argument.function for argument in arguments)

    def coalesce(context: EvalContext) -> Any:
        for function in functions:
            value = function(context)
            if value is not None:
                return value
        return None

    return _Node(coalesce, kinds.pop() if kinds else "null", _offset(tree))


_FUNCTIONS: dict[str, Signature] = {
    "now": _call_now,
    "age": _call_age,
    "lower": _unary_function("lower", ("string",), "string", str.lower),
    "upper": _unary_function("upper", ("string",), "string", str.upper),
    "trim": _unary_function("trim", ("string",), "string", str.strip),
    "len": _unary_function("len", ("string", "list", "json"), "number", lambda value: Decimal(len(value))),
    "abs": _unary_function("abs", ("number", "duration"), "same", abs),
    "days": _unary_function(
        "days", ("duration",), "number", lambda value: Decimal(str(value.total_seconds() / 86400))
    ),
    "coalesce": _call_coalesce,
}
