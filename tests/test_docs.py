"""Checks that the README, the reference docs and the examples match the code."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rulesd.cli import main
from rulesd.config import ENVIRONMENT, SECRET_KEYS, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
CONFIG_SCHEMA = ROOT / "schema" / "config.schema.json"
EXAMPLE_CONFIG = ROOT / "examples" / "rulesd.yaml"
EXAMPLE_WORKFLOW = ROOT / "examples" / "github-actions" / "validate-rules.yml"
EXAMPLE_UNIT = ROOT / "examples" / "systemd" / "rulesd.service"
OWN_PAGES = [README, CONFIGURATION_DOC, ROOT / "docs" / "operations.md", ROOT / "docs" / "index.md"]

LINK_PATTERN = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _schema() -> dict:
    return json.loads(CONFIG_SCHEMA.read_text(encoding="utf-8"))


def _doc_sections(text: str) -> dict[str, str]:
    """Split docs/configuration.md into its ``## `section` `` parts."""
    sections: dict[str, str] = {}
    for match in re.finditer(r"^## `(\w+)`\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL):
        sections[match.group(1)] = match.group(2)
    return sections


def _help_commands(args: list[str]) -> set[str]:
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    commands_part = result.output.split("Commands:", 1)
    if len(commands_part) < 2:
        return set()
    return {line.split()[0] for line in commands_part[1].splitlines() if line.startswith("  ") and line.split()}


def _code_spans(markdown: str) -> list[str]:
    """Return the inline code spans and fenced blocks of a Markdown text."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", markdown, flags=re.DOTALL)
    without_blocks = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    return blocks + re.findall(r"`([^`\n]+)`", without_blocks)


def test_configuration_doc_lists_every_schema_key() -> None:
    sections = _doc_sections(CONFIGURATION_DOC.read_text(encoding="utf-8"))
    for section, spec in _schema()["properties"].items():
        assert section in sections, f"docs/configuration.md has no '## `{section}`' heading"
        for key in spec["properties"]:
            assert f"| `{key}` |" in sections[section], f"docs/configuration.md does not list {section}.{key}"


def test_configuration_doc_lists_every_variable() -> None:
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    for (section, key), names in ENVIRONMENT.items():
        for name in names:
            assert f"`{name}`" in text, f"docs/configuration.md does not name {name} ({section}.{key})"


def test_configuration_doc_marks_every_secret() -> None:
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    for section, key in SECRET_KEYS:
        for name in ENVIRONMENT[(section, key)]:
            assert f"| `{name}` | `{section}.{key}` | secret: environment only |" in text


def test_configuration_doc_defaults_match_settings() -> None:
    sections = _doc_sections(CONFIGURATION_DOC.read_text(encoding="utf-8"))
    defaults = Settings()
    for section, spec in _schema()["properties"].items():
        for key in spec["properties"]:
            value = getattr(getattr(defaults, section), key)
            if value is None or not isinstance(value, (int, str)) or isinstance(value, bool):
                continue
            row = re.search(rf"^\| `{key}` \| ([^|]+) \|", sections[section], flags=re.MULTILINE)
            assert row is not None, f"no table row for {section}.{key}"
            documented = row.group(1).replace(",", "")
            assert str(value) in documented, f"{section}.{key}: docs say {row.group(1)!r}, the default is {value!r}"


def test_example_config_loads() -> None:
    settings = load_settings(EXAMPLE_CONFIG, environ={})
    assert settings.source == EXAMPLE_CONFIG
    assert settings.messaging.dry_run is True
    assert settings.logging.format == "json"


def test_example_config_sets_every_section() -> None:
    document = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert set(document) == set(_schema()["properties"])


def _named_commands(span: str) -> list[tuple[str, str | None]]:
    """Return (command, next word) for each ``rulesd ...`` invocation in a code span."""
    options_with_values = {name for param in main.params if not param.is_flag for name in param.opts}
    found = []
    for line in span.splitlines():
        words = line.replace("$", " ").split()
        for index, word in enumerate(words):
            if Path(word).name != "rulesd":
                continue
            rest = words[index + 1 :]
            while rest and rest[0].startswith("-"):
                option = rest.pop(0)
                if option in options_with_values and rest:
                    rest.pop(0)
            if rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
                following = rest[1] if len(rest) > 1 and re.fullmatch(r"[a-z][a-z-]*", rest[1]) else None
                found.append((rest[0], following))
    return found


def test_readme_commands_exist() -> None:
    top_level = _help_commands([])
    named: set[tuple[str, str | None]] = set()
    for span in _code_spans(README.read_text(encoding="utf-8")):
        named.update(_named_commands(span))
    assert any(command == "demo" for command, _ in named), "README does not show rulesd demo"
    for command, subcommand in sorted(named, key=str):
        assert command in top_level, f"README names 'rulesd {command}', which rulesd --help does not list"
        group_commands = _help_commands([command])
        if group_commands and subcommand is not None:
            assert subcommand in group_commands, f"README names 'rulesd {command} {subcommand}', which does not exist"


def test_github_workflow_parses() -> None:
    workflow = yaml.safe_load(EXAMPLE_WORKFLOW.read_text(encoding="utf-8"))
    # YAML 1.1 reads the bare key `on` as true.
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers
    steps = workflow["jobs"]["validate"]["steps"]
    commands = [step["run"] for step in steps if "run" in step]
    assert any(command.startswith("rulesd validate --format github") for command in commands)


@pytest.mark.parametrize("source", [EXAMPLE_WORKFLOW, EXAMPLE_UNIT])
def test_example_commands_accept_options(source: Path) -> None:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    invocations = []
    for line in lines:
        command = line.split("run:", 1)[-1] if source.suffix == ".yml" else line.partition("ExecStart=")[2]
        words = shlex.split(command) if command.strip() else []
        if words and Path(words[0]).name == "rulesd":
            invocations.append(words[1:])
    assert invocations, f"{source.name} runs no rulesd command"
    for arguments in invocations:
        result = CliRunner().invoke(main, [*arguments, "--help"])
        assert result.exit_code == 0, f"rulesd {' '.join(arguments)}: {result.output}"


@pytest.mark.parametrize("page", OWN_PAGES, ids=lambda path: path.name)
def test_doc_links_resolve(page: Path) -> None:
    if not page.exists():
        pytest.fail(f"{page.relative_to(ROOT)} is missing")
    for target in LINK_PATTERN.findall(page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
