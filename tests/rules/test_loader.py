"""Loading rule files: compiled objects, several defects per file, duplicate ids and discovery."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from rulesd.rules.loader import load_rules

GOOD_RULE = """\
rule: follow-up
mode: shadow
tags: [sales]
trigger:
  on: estimate.status_changed
  from: Open
  to: [Sold, Dismissed]
  max_age: 2h
enroll:
  key: estimate.customer_id
  on_retrigger: restart
stop_if: customer.do_not_service
steps:
  - name: thanks
    after: 30m
    window: "Mon-Sat 09:00-18:00"
    when: estimate.total >= 100
    do: Text {{customer.name}} to thank them.
    tools: [send_sms]
"""

THREE_DEFECTS = """\
rule: three-defects
trigger:
  on: estimate.created
stop_if: estimate.statsu == 'Sold'
steps:
  - name: text
    after: 2d
    do: Text {{customer.nmae}}.
    tools: [send_sms, send_fax]
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_rules_compiles_every_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "follow-up.yaml", GOOD_RULE)

    result = load_rules([tmp_path])

    assert result.ok
    assert result.diagnostics == ()
    (rule,) = result.rules
    assert rule.id == "follow-up"
    assert rule.mode == "shadow"
    assert rule.tags == ("sales",)
    assert rule.trigger.entity == "estimate"
    assert rule.trigger.kind == "status_changed"
    assert rule.trigger.from_statuses == ("Open",)
    assert rule.trigger.to_statuses == ("Sold", "Dismissed")
    assert rule.trigger.max_age == timedelta(hours=2)
    assert (rule.enroll.key_alias, rule.enroll.key_column, rule.enroll.on_retrigger) == (
        "estimate",
        "customer_id",
        "restart",
    )
    assert rule.stop_if is not None and rule.stop_if.aliases == frozenset({"customer"})
    step = rule.steps[0]
    assert step.after == timedelta(minutes=30)
    assert step.window is not None and step.window.source == "Mon-Sat 09:00-18:00"
    assert step.when is not None and step.when.source == "estimate.total >= 100"
    assert step.tools == ("send_sms",)
    assert step.position is not None and step.position.line == 14
    assert rule.version == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rule.path == str(path)
    assert rule.aliases == frozenset({"estimate", "customer"})


def test_load_rules_defaults(tmp_path: Path) -> None:
    _write(tmp_path, "minimal.yaml", GOOD_RULE.split("enroll:")[0].replace("  max_age: 2h\n", "") + "steps:\n"
           "  - name: one\n    after: 1d\n    do: Email {{customer.name}}.\n    tools: [send_email]\n")

    (rule,) = load_rules([tmp_path]).rules

    assert rule.trigger.max_age == timedelta(days=1)
    assert (rule.enroll.key_alias, rule.enroll.key_column, rule.enroll.on_retrigger) == ("estimate", "id", "ignore")
    assert rule.enabled is True
    assert rule.stop_if is None


def test_load_rules_reports_three_independent_defects(tmp_path: Path) -> None:
    _write(tmp_path, "three.yaml", THREE_DEFECTS)

    result = load_rules([tmp_path])

    positions = [(diagnostic.line, diagnostic.column) for diagnostic in result.diagnostics]
    assert positions == [(4, 19), (8, 25), (9, 23)]
    assert "unknown field 'estimate.statsu' (did you mean 'status'?)" in result.diagnostics[0].message
    assert "unknown field 'customer.nmae' (did you mean 'name'?)" in result.diagnostics[1].message
    assert "'send_fax' is not one of send_sms, send_email" in result.diagnostics[2].message
    assert result.rules == ()
    assert not result.ok


def test_load_rules_duplicate_id_across_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", GOOD_RULE)
    _write(tmp_path, "b.yaml", GOOD_RULE)

    result = load_rules([tmp_path])

    (diagnostic,) = result.diagnostics
    assert diagnostic.path == str(tmp_path / "b.yaml")
    assert (diagnostic.line, diagnostic.column) == (1, 7)
    assert f"duplicate rule id 'follow-up', also defined in {tmp_path / 'a.yaml'}:1" in diagnostic.message
    assert [rule.path for rule in result.rules] == [str(tmp_path / "a.yaml")]


def test_load_rules_keeps_valid_rules_beside_broken(tmp_path: Path) -> None:
    _write(tmp_path, "good.yaml", GOOD_RULE)
    _write(tmp_path, "broken.yaml", THREE_DEFECTS)

    result = load_rules([tmp_path])

    assert [rule.id for rule in result.rules] == ["follow-up"]
    assert not result.ok


def test_find_rules_skips_scenarios_and_hidden(tmp_path: Path) -> None:
    _write(tmp_path, "nested/good.yml", GOOD_RULE)
    _write(tmp_path, "good.test.yaml", "not: a rule")
    _write(tmp_path, ".hidden/bad.yaml", "not: a rule")
    _write(tmp_path, "notes.txt", "not: a rule")

    result = load_rules([tmp_path])

    assert result.files == (str(tmp_path / "nested/good.yml"),)
    assert result.ok


def test_load_rules_missing_path(tmp_path: Path) -> None:
    result = load_rules([tmp_path / "nope"])

    assert not result.ok
    assert "rule path not found" in result.diagnostics[0].message


def test_load_rules_non_utf8_file(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"rule: caf\xe9\n")

    result = load_rules([tmp_path])

    assert "not UTF-8" in result.diagnostics[0].message


def test_load_rules_block_scalar_position(tmp_path: Path) -> None:
    text = GOOD_RULE.replace(
        "    do: Text {{customer.name}} to thank them.\n",
        "    do: |\n      Text the customer\n      named {{customer.nmae}}.\n",
    )
    _write(tmp_path, "block.yaml", text)

    (diagnostic,) = load_rules([tmp_path]).diagnostics

    assert (diagnostic.line, diagnostic.column) == (20, 24)
    assert diagnostic.source_line == "      named {{customer.nmae}}."


def test_load_rules_bad_explicit_tags(tmp_path: Path) -> None:
    text = GOOD_RULE.replace("  - name: thanks", "  - name: !!int thanks").replace(
        "    after: 30m", "    after: !!timestamp soon"
    )
    _write(tmp_path, "tags.yaml", text)

    result = load_rules([tmp_path])

    messages = [diagnostic.message for diagnostic in result.diagnostics]
    assert any("invalid YAML value 'thanks' for tag tag:yaml.org,2002:int" in message for message in messages)
    assert any("invalid YAML value 'soon' for tag tag:yaml.org,2002:timestamp" in message for message in messages)
    assert not result.ok


def test_load_rules_tool_item_not_string(tmp_path: Path) -> None:
    _write(tmp_path, "tools.yaml", GOOD_RULE.replace("tools: [send_sms]", "tools: [{send: sms}]"))

    result = load_rules([tmp_path])

    assert [diagnostic.line for diagnostic in result.diagnostics] == [18, 19]
    assert "steps[0].tools[0]" in result.diagnostics[1].message


def test_load_rules_quoted_scalar_positions(tmp_path: Path) -> None:
    text = GOOD_RULE.replace(
        "    do: Text {{customer.name}} to thank them.\n",
        '    do: "Text \\"{{customer.name}}\\" \\u00e9 {{customer.nmae}}."\n',
    ).replace("stop_if: customer.do_not_service", "stop_if: 'customer.name == ''x'' or customer.nme == ''y'''")
    _write(tmp_path, "quoted.yaml", text)

    first, second = load_rules([tmp_path]).diagnostics

    assert (first.line, first.column) == (12, 46)
    assert first.source_line[first.column - 1 :].startswith("nme ==")
    assert second.line == 18
    assert second.source_line[second.column - 1 :].startswith("nmae}}")


def test_find_rules_loads_file_named_twice(tmp_path: Path) -> None:
    path = _write(tmp_path, "good.yaml", GOOD_RULE)

    result = load_rules([tmp_path, tmp_path / "." / "good.yaml", path])

    assert result.files == (str(path),)
    assert result.diagnostics == ()
