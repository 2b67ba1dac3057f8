"""``rulesd validate``: check rule files with the daemon's own loader and report every problem."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import click

from rulesd.rules.diagnostics import Diagnostic, format_github, format_json, format_text, summarize
from rulesd.rules.loader import SCENARIO_SUFFIXES, load_rules

DEFAULT_RULES_DIR = Path("rules")
_GLOB_CHARACTERS = set("*?[")


def _expand(arguments: tuple[str, ...]) -> list[Path]:
    """Expand globs and check that every path exists, or raise ``click.UsageError`` (exit 2)."""
    if not arguments:
        if not DEFAULT_RULES_DIR.is_dir():
            raise click.UsageError(f"no paths given and the default directory {DEFAULT_RULES_DIR}/ does not exist")
        return [DEFAULT_RULES_DIR]
    paths: list[Path] = []
    for argument in arguments:
        if _GLOB_CHARACTERS & set(argument):
            # A pattern like examples/rules/*.yaml also matches the scenario files
            # of `rulesd test` (*.test.yaml), which are not rules.
            matches = [
                match for match in sorted(glob.glob(argument, recursive=True)) if not match.endswith(SCENARIO_SUFFIXES)
            ]
            if not matches:
                raise click.UsageError(f"the pattern {argument!r} matched no files")
            paths.extend(Path(match) for match in matches)
            continue
        path = Path(argument)
        if not path.exists():
            raise click.UsageError(f"path not found: {argument}")
        paths.append(path)
    return paths


@click.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "github", "json"]),
    default="text",
    show_default=True,
    help="Output format: text for terminals, github for GitHub Actions annotations, json for tools.",
)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(paths: tuple[str, ...], output_format: str, strict: bool) -> None:
    """Check rule files (default: rules/) and report every error with file:line:col.

    Exits 0 when every rule is valid, 1 when any rule is invalid and 2 on a
    usage error, such as a path that does not exist.
    """
    result = load_rules(_expand(paths))
    diagnostics: list[Diagnostic] = list(result.diagnostics)
    if strict:
        diagnostics = [diagnostic.as_error() for diagnostic in diagnostics]
    diagnostics.sort(key=lambda diagnostic: (diagnostic.path, diagnostic.line, diagnostic.column))

    if output_format == "json":
        click.echo(format_json(diagnostics))
    elif output_format == "github":
        for diagnostic in diagnostics:
            click.echo(format_github(diagnostic))
        click.echo(summarize(diagnostics, len(result.files), len(result.rules)), err=True)
    else:
        for diagnostic in diagnostics:
            click.echo(format_text(diagnostic))
        click.echo(summarize(diagnostics, len(result.files), len(result.rules)))

    if any(diagnostic.is_error for diagnostic in diagnostics):
        sys.exit(1)
