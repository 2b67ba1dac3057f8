"""The ``rulesd`` command: global options, subcommand registration and exit codes.

Each subcommand lives in its own module beside this one and only parses
options, calls into the packages below and prints. Errors from the
``RulesdError`` tree are mapped to one line and an exit code here, in one
place; a traceback is shown only with ``--log-level debug``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from rulesd import __version__
from rulesd.cli.context import CliContext
from rulesd.errors import RulesdError

logger = logging.getLogger(__name__)


class RulesdGroup(click.Group):
    """A click group that turns rulesd errors into one clear line and an exit code."""

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


def _register_commands() -> None:
    # Each module defines one command or group; the import order is the help order.
    from rulesd.cli import db, validate

    main.add_command(db.db)
    main.add_command(validate.validate)
    from rulesd.cli import explain, rules, run, status
    from rulesd.cli import test as test_command

    main.add_command(run.run)
    main.add_command(status.status)
    main.add_command(explain.explain)
    main.add_command(rules.rules)
    main.add_command(test_command.test)
    from rulesd.cli import simulator

    main.add_command(simulator.simulator)

    from rulesd.cli import sync as sync_command

    main.add_command(sync_command.sync)

    from rulesd.cli import contacts

    main.add_command(contacts.contacts)


_register_commands()
