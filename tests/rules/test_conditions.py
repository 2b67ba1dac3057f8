"""The condition language: evaluation, null semantics and type errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from rulesd.rules.conditions import compile_condition
from rulesd.rules.model import EvalContext
from rulesd.rules.scope import Scope

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=timezone.utc)
ESTIMATE_SCOPE = Scope.for_trigger("estimate")


def _context(**overrides: Any) -> EvalContext:
    rows: dict[str, Any] = {
        "estimate": {
            "id": 7,
            "status": "Open",
            "total": Decimal("612.50"),
            "name": "Furnace replacement",
            "created_on": NOW - timedelta(days=3),
            "sold_on": None,
        },
        "customer": {"name": "Acme Heating LLC", "do_not_mail": False, "do_not_service": None},
        "job": None,
    }
    rows.update(overrides)
    return EvalContext(rows=rows, now=NOW, event={"kind": "status_changed", "from": "Open", "to": "Sold"})


def _evaluate(source: str, context: EvalContext | None = None) -> bool:
    condition, problems = compile_condition(source, ESTIMATE_SCOPE)
    assert condition is not None, [problem.message for problem in problems]
    return condition.evaluate(context or _context())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("estimate.status in ['Sold', 'Dismissed']", False),
        ("estimate.status not in ['Sold', 'Dismissed']", True),
        ("estimate.total >= 500 and not customer.do_not_mail", True),
        ("estimate.total > 500 and estimate.total < 600", False),
        ("customer.name contains 'LLC'", True),
        ("customer.name starts_with 'Acme'", True),
        ("customer.name ends_with 'Inc'", False),
        ("customer.name matches '^Acme\\\\s+Heat'", True),
        ("lower(customer.name) == 'acme heating llc'", True),
        ("len(estimate.name) == 19", True),
        ("age(estimate.created_on) > 2d", True),
        ("age(estimate.created_on) > 1w", False),
        ("estimate.created_on + 3d <= now()", True),
        ("now() - estimate.created_on == 72h", True),
        ("estimate.total * 2 - 25 == 1200", True),
        ("-estimate.total < 0", True),
        ("estimate.total / 0 > 1", False),
        ("event.from == 'Open' and event.to == 'Sold'", True),
        ("event.kind == 'status_changed'", True),
        ("estimate.sold_on is null", True),
        ("estimate.sold_on is not null", False),
        ("job.total > 0 or true", True),
        ("days(age(estimate.created_on)) == 3", True),
        ("coalesce(estimate.sold_on, estimate.created_on) < now()", True),
        ("abs(-estimate.total) == 612.5", True),
        ("(estimate.total > 1000 or estimate.status == 'Open') and customer.name contains 'Acme'", True),
    ],
)
def test_condition_evaluates(source: str, expected: bool) -> None:
    assert _evaluate(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("job.total > 0", False),
        ("job.total <= 0", False),
        ("job.job_status != 'Completed'", False),
        ("job.job_status in ['Completed']", False),
        ("job.job_status not in ['Completed']", False),
        ("not (job.total > 0)", True),
        ("job.job_number contains '1'", False),
        ("age(job.completed_on) > 1d", False),
        ("job.total is null", True),
        ("customer.do_not_service", False),
        ("not customer.do_not_service", True),
        ("estimate.sold_on < now()", False),
    ],
)
def test_condition_null_is_false(source: str, expected: bool) -> None:
    assert _evaluate(source) is expected


def test_condition_missing_alias_row_is_null() -> None:
    context = EvalContext(rows={}, now=NOW)

    assert _evaluate("estimate.total > 0", context) is False
    assert _evaluate("estimate.total is null", context) is True


def test_condition_reports_aliases() -> None:
    source = "estimate.total > 0 and customer.name contains 'x' or event.to == 'Sold'"

    condition, _ = compile_condition(source, ESTIMATE_SCOPE)

    assert condition is not None
    assert condition.aliases == frozenset({"estimate", "customer", "event"})


@pytest.mark.parametrize(
    ("source", "offset", "message"),
    [
        ("estimate.statsu == 'Open'", 9, "unknown field 'estimate.statsu' (did you mean 'status'?)"),
        ("estimate.total == 'x'", 15, "cannot compare a number with a string using '=='"),
        ("customer.do_not_mail > true", 21, "'>' cannot order booleans"),
        ("estimate.total and true", 0, "'and' needs true or false on each side, got a number"),
        ("lower(estimate.total) == 'x'", 6, "lower() needs a string, got a number"),
        ("estimate.name contains 5", 23, "'contains' needs a string, got a number"),
        ("estimate.total in ['a', 'b']", 18, "'in' compares a number with a list of strings"),
        ("[1, 'a'] contains 1", 0, "list items must all be of one kind, got number, string"),
        ("estimate.total + estimate.name > 1", 15, "cannot apply '+' to a number and a string"),
        ("estimate.name matches estimate.summary", 22, "'matches' needs a regular expression written as a string literal"),
        ("estimate.total > 1 and", 22, "condition ends too early"),
        ("estimate.total ! 1", 15, "unexpected character '!'; use and, or, not"),
        ("estimate.total > 1 1", 19, "unexpected '1'"),
    ],
)
def test_condition_rejects(source: str, offset: int, message: str) -> None:
    condition, problems = compile_condition(source, ESTIMATE_SCOPE)

    assert condition is None
    errors = [problem for problem in problems if problem.severity == "error"]
    assert len(errors) == 1, [problem.message for problem in problems]
    assert errors[0].offset == offset
    assert errors[0].message.startswith(message)


def test_condition_reports_every_bad_operand() -> None:
    _, problems = compile_condition("estimate.statsu == 'a' or customer.nmae == 'b'", ESTIMATE_SCOPE)

    assert [problem.offset for problem in problems] == [9, 35]


def test_condition_unknown_status_is_warning() -> None:
    condition, problems = compile_condition("estimate.status in ['Sold', 'Won']", ESTIMATE_SCOPE)

    assert condition is not None
    (warning,) = problems
    assert warning.severity == "warning"
    assert warning.message == "'Won' is not a known status of estimate; known values: Open, Sold, Dismissed"


def test_condition_bad_row_type_is_false(caplog: pytest.LogCaptureFixture) -> None:
    context = _context(estimate={"total": 612.5, "name": 42})

    assert _evaluate("estimate.total * 2 > 1", context) is False
    assert _evaluate("lower(estimate.name) == 'x'", context) is False
    assert "condition_evaluation_failed" in [getattr(record, "event", "") for record in caplog.records]


def test_condition_unknown_event_kind_is_warning() -> None:
    _, problems = compile_condition("event.kind == 'craeted'", ESTIMATE_SCOPE)

    (warning,) = problems
    assert warning.message == "'craeted' is not an event kind; known values: created, updated, status_changed, deleted"


@pytest.mark.parametrize(
    ("source", "offset", "message"),
    [
        ("estimate.status == Sold", 19, "'Sold' is not a field path: quote a string ('Sold') or write alias.field"),
        ("estimate.status in ('Sold', 'Dismissed')", 26, "unexpected ','; write a list in square brackets"),
        ("estimate.total > 5 AND true", 19, "unexpected 'AND'; keywords are lower case: and"),
        ("estimate.status is 'Sold'", 19, "unexpected ''Sold''; 'is' only tests for null, use == to compare"),
        ("estimate.total >= $500", 18, "unexpected character '$'; write amounts as plain numbers"),
        ("age(estimate.created_on) > 2 days", 29, "unexpected 'days'; write a duration without a space"),
        ("estimate.status == 'Open", 19, "unexpected character '''; the string is not closed"),
    ],
)
def test_condition_syntax_hints(source: str, offset: int, message: str) -> None:
    _, problems = compile_condition(source, ESTIMATE_SCOPE)

    (problem,) = problems
    assert problem.offset == offset
    assert problem.message.startswith(message)
