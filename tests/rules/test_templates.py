"""Action templates: rendering placeholders and rejecting ones that name no field."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from rulesd.rules.model import EvalContext
from rulesd.rules.scope import Scope
from rulesd.rules.templates import compile_template

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=timezone.utc)
SCOPE = Scope.for_trigger("appointment_assignment")


def test_template_renders_fields_of_related_rows() -> None:
    template, problems = compile_template(
        "Hi {{customer.name}}, {{ technician.name }} is on the way (job {{job.job_number}}, {{job.total}}).",
        SCOPE,
    )
    context = EvalContext(
        rows={
            "customer": {"name": "Dana"},
            "technician": {"name": "Sam"},
            "job": {"job_number": "J-100", "total": Decimal("250.00")},
        },
        now=NOW,
    )

    assert problems == []
    assert template is not None
    assert template.render(context) == "Hi Dana, Sam is on the way (job J-100, 250.00)."
    assert template.aliases == frozenset({"customer", "technician", "job"})


def test_template_missing_values_render_empty() -> None:
    template, _ = compile_template("[{{customer.name}}][{{appointment.starts_at}}]", SCOPE)

    assert template is not None
    assert template.render(EvalContext(rows={"customer": None}, now=NOW)) == "[][]"


def test_template_formats_times_in_utc() -> None:
    template, _ = compile_template("{{appointment.starts_at}} {{appointment.is_confirmed}}", SCOPE)
    context = EvalContext(
        rows={"appointment": {"starts_at": datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc), "is_confirmed": True}},
        now=NOW,
    )

    assert template is not None
    assert template.render(context) == "2026-12-05 09:30 UTC yes"


def test_template_rejects_unknown_fields_with_offsets() -> None:
    template, problems = compile_template("{{customer.nmae}} and {{invoice.total}}", SCOPE)

    assert template is None
    assert [problem.offset for problem in problems] == [11, 24]
    assert "unknown field 'customer.nmae' (did you mean 'name'?)" in problems[0].message
    assert "'invoice' is not related" in problems[1].message


def test_template_rejects_unbalanced_braces() -> None:
    _, problems = compile_template("Hello {{customer.name", SCOPE)

    assert [problem.message for problem in problems] == ["placeholder '{{' is not closed with '}}'"]
