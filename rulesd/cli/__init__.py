"""The ``rulesd`` command: global options, subcommand registration and exit codes.

Each subcommand lives in its own module beside this one and only parses
options, calls into the packages below and prints. Errors from the
``RulesdError`` tree are mapped to one line and an exit code here, in one
place; a traceback is shown only with ``--log-level debug``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import click

from rulesd import __version__
from rulesd.cli.context import CliContext
from rulesd.errors import RulesdError

logger = logging.getLogger(__name__)


# Subcommands, imported only when used: "rulesd validate" must not pay for
# importing the Anthropic SDK, which the agent commands need. Name -> module:attribute.
COMMANDS: dict[str, str] = {
    "db": "rulesd.cli.db:db",
    "sync": "rulesd.cli.sync:sync",
    "validate": "rulesd.cli.validate:validate",
    "test": "rulesd.cli.test:test",
    "run": "rulesd.cli.run:run",
    "status": "rulesd.cli.status:status",
    "explain": "rulesd.cli.explain:explain",
    "rules": "rulesd.cli.rules:rules",
    "contacts": "rulesd.cli.contacts:contacts",
    "simulator": "rulesd.cli.simulator:simulator",
    "demo": "rulesd.cli.demo:demo",
}


class RulesdGroup(click.Group):
    """A click group that loads subcommands lazily and turns rulesd errors into one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in COMMANDS:
            return command
        module_name, attribute = COMMANDS[cmd_name].split(":")
        module = importlib.import_module(module_name)
        command = getattr(module, attribute)
        self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RulesdError as exc:
            debug = isinstance(ctx.obj, CliContext) and ctx.obj.log_level == "debug"
            if debug:
                logger.exception("command failed")
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=RulesdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rulesd")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Configuration file. Default: ./rulesd.yaml when it exists.",
)
@click.option(
    "--database-url",
    default=None,
    help="Postgres URL. Also read from RULESD_DATABASE_URL or SERVICETITAN_DATABASE_URL. "
    "Without one, rulesd starts an embedded Postgres in .rulesd/pgdata.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level. Default: info.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log format: text for terminals, json lines for production. Default: text.",
)
@click.pass_context
def main(
    ctx: click.Context,
    config_path: Path | None,
    database_url: str | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Mirror a ServiceTitan tenant into Postgres and run automation rules over it."""
    ctx.obj = CliContext(
        config_path=config_path,
        database_url=database_url,
        log_level=log_level,
        log_format=log_format,
    )
    ctx.call_on_close(ctx.obj.close)
