"""Validate a rule file's data against ``schema/rule.schema.json`` and report errors at their keys."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jsonschema

from rulesd.resources import schema_path
from rulesd.rules.diagnostics import did_you_mean
from rulesd.rules.source import KeyPath, SourceFile

RULE_SCHEMA_FILE = "rule.schema.json"


@lru_cache(maxsize=1)
def rule_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_path(RULE_SCHEMA_FILE).read_text(encoding="utf-8"))
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(rule_schema())


def validate_schema(data: Any, source: SourceFile) -> set[KeyPath]:
    """Report every schema violation in ``data`` to ``source`` and return the key paths that failed.

    The loader skips its own checks below a failed path, so one defect
    yields one message.
    """
    failed: set[KeyPath] = set()
    if _conforms(data, rule_schema()) is True:
        return failed
    errors = sorted(
        _validator().iter_errors(data),
        key=lambda error: (list(map(str, error.absolute_path)), error.validator),
    )
    for error in errors:
        for leaf in _leaf_errors(error):
            _report(leaf, source)
            # An unknown or missing key leaves the rest of its mapping checkable.
            if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
                allowed = leaf.schema.get("properties", {}) if isinstance(leaf.schema, dict) else {}
                extra = [name for name in leaf.instance if name not in allowed]
                failed.update(tuple(leaf.absolute_path) + (name,) for name in extra)
            elif leaf.validator != "required":
                failed.add(tuple(leaf.absolute_path))
        if error.validator not in ("additionalProperties", "required"):
            failed.add(tuple(error.absolute_path))
    return failed


# Keywords ``_conforms`` checks itself. Annotations such as ``description``
# never affect validity.
_ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples"}
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def _conforms(value: Any, schema: dict[str, Any]) -> bool | None:
    """Check ``value`` against the subset of JSON Schema the rule schema uses, much faster than jsonschema.

    Returns True when ``value`` is valid, False when it is not and None
    when the schema uses a keyword this check does not implement. Only
    True is trusted: anything else runs the full jsonschema validator,
    which produces the messages.
    """
    for keyword, expected in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "type":
            types = _JSON_TYPES.get(expected)
            if types is None or not isinstance(value, types):
                return False
            if isinstance(value, bool) and expected in ("integer", "number"):
                return False
        elif keyword == "enum":
            if not any(value == item and type(value) is type(item) for item in expected):
                return False
        elif keyword == "pattern":
            if not isinstance(value, str) or _compiled_pattern(expected).search(value) is None:
                return False
        elif keyword in ("minLength", "maxLength", "minItems"):
            if not isinstance(value, (str, list)):
                continue
            if keyword == "maxLength" and len(value) > expected:
                return False
            if keyword != "maxLength" and len(value) < expected:
                return False
        elif keyword == "uniqueItems":
            if expected and isinstance(value, list) and len({repr(item) for item in value}) != len(value):
                return False
        elif keyword == "required":
            if isinstance(value, dict) and any(name not in value for name in expected):
                return False
        elif keyword == "properties":
            if not isinstance(value, dict):
                continue
            for name, subschema in expected.items():
                if name in value and _conforms(value[name], subschema) is not True:
                    return False
        elif keyword == "additionalProperties":
            if expected is not False or not isinstance(value, dict):
                return None
            if any(name not in schema.get("properties", {}) for name in value):
                return False
        elif keyword == "items":
            if isinstance(value, list) and any(_conforms(item, expected) is not True for item in value):
                return False
        elif keyword == "oneOf":
            if sum(1 for branch in expected if _conforms(value, branch) is True) != 1:
                return False
        else:
            return None
    return True


@lru_cache(maxsize=64)
def _compiled_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    # A oneOf failure contains one error per branch, and the branch whose type matched explains best.
    if error.validator == "oneOf" and error.context:
        typed = [sub for sub in error.context if sub.validator != "type"]
        if typed:
            return [min(typed, key=lambda sub: len(sub.absolute_path))]
    return [error]


def describe_path(key_path: KeyPath) -> str:
    """Format ``('steps', 0, 'after')`` as ``steps[0].after``."""
    text = ""
    for part in key_path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "the rule"


def _report(error: jsonschema.ValidationError, source: SourceFile) -> None:
    key_path = tuple(error.absolute_path)
    where = describe_path(key_path)
    if key_path and key_path[-1] in ("after", "max_age") and error.validator in ("type", "pattern"):
        source.report(key_path, f"{where}: {_duration_message(error.instance)}", code="bad-duration")
        return
    validator = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(schema.get("properties", {}))
        for name in error.instance:
            if name not in allowed:
                suggestion = did_you_mean(name, allowed)
                prefix = f"{where}: " if key_path else ""
                source.report(
                    key_path + (name,),
                    f"{prefix}unknown key '{name}'{suggestion}; allowed: {', '.join(allowed)}",
                    at_key=True,
                    code="unknown-key",
                )
        return
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        prefix = f"{where}: " if key_path else ""
        source.report(key_path, f"{prefix}missing required key '{missing}'", at_key=True, code="missing-key")
        return
    if validator == "enum":
        allowed = ", ".join(str(value) for value in error.validator_value)
        source.report(key_path, f"{where}: {error.instance!r} is not one of {allowed}", code="invalid-value")
        return
    if validator == "type":
        expected = error.validator_value
        message = f"expected {_type_name(expected)}, got {_instance_type(error.instance)}"
        if not key_path:
            message = f"invalid rule file, which must be one mapping of keys: {message}"
        else:
            message = f"{where}: {message}"
        source.report(key_path, message, code="invalid-type")
        return
    if validator == "pattern":
        source.report(key_path, f"{where}: {_pattern_message(key_path, error.instance)}", code="invalid-value")
        return
    if validator in ("minItems", "minLength"):
        source.report(key_path, f"{where}: must not be empty", code="invalid-value")
        return
    if validator == "uniqueItems":
        source.report(key_path, f"{where}: lists the same value twice", code="invalid-value")
        return
    if not key_path:
        source.report(key_path, f"invalid rule file, which must be one mapping of keys: {error.message}", code="schema")
        return
    source.report(key_path, f"{where}: {error.message}", code="schema")


def _duration_message(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"invalid duration {value!r}: add a unit s, m, h, d or w, such as {value}m or {value}h"
    return f"invalid duration {value!r}: expected a number with a unit s, m, h, d or w, such as 30m, 2h or 3d"


def _pattern_message(key_path: KeyPath, value: Any) -> str:
    last = key_path[-1] if key_path else ""
    if last == "on":
        return f"invalid trigger {value!r}: expected <entity>.<created|updated|status_changed|deleted>"
    if last == "key":
        return f"invalid enrollment key {value!r}: expected alias.field, such as estimate.customer_id"
    if last in ("rule", "name"):
        return f"invalid name {value!r}: use lower-case letters, digits, - and _, starting with a letter or digit"
    return f"{value!r} does not match the expected format"


def _type_name(expected: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "boolean": "true or false",
             "integer": "an integer", "number": "a number"}
    if isinstance(expected, list):
        return " or ".join(names.get(item, item) for item in expected)
    return names.get(expected, str(expected))


def _instance_type(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"a {type(value).__name__} ({value})"
