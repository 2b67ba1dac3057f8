"""``rulesd run``: the daemon that turns change events into enrollments and runs their steps."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import anyio
import click

from rulesd.cli.context import CliContext
from rulesd.daemon import Daemon, DaemonOptions
from rulesd.db import migrate

pass_context = click.make_pass_decorator(CliContext)


@click.command()
@click.option(
    "--rules",
    "rules_dirs",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Rule directory or file; repeat for several. Default: rules.directory from the configuration (rules).",
)
@click.option("--dry-run", is_flag=True, help="Run every step but send nothing; the executor records what it would send.")
@click.option("--no-sync", is_flag=True, help="Do not run the sync scheduler in this process.")
@click.option("--no-migrate", is_flag=True, help="Do not apply pending migrations at start.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics and /healthz on 127.0.0.1 at this port.",
)
@pass_context
def run(
    context: CliContext,
    rules_dirs: tuple[Path, ...],
    dry_run: bool,
    no_sync: bool,
    no_migrate: bool,
    metrics_port: int | None,
) -> None:
    """Run the workflow engine until SIGINT or SIGTERM; SIGHUP reloads the rules."""
    _guard_start_up_signals()
    settings = context.settings
    url = context.database_url_or_start()
    if not no_migrate:
        for name in migrate.upgrade(url):
            click.echo(f"applied migration {name}", err=True)
    paths = list(rules_dirs) or [Path(settings.rules.directory)]
    options = DaemonOptions(rules_paths=paths, dry_run=dry_run, sync=not no_sync, metrics_port=metrics_port)
    daemon = Daemon(settings, url, options)
    anyio.run(daemon.run, backend="asyncio")


def _guard_start_up_signals() -> None:
    # Until the daemon installs its own handlers, a SIGHUP must not kill the
    # process: the rules are read at start anyway, so an early reload request
    # can be dropped. A SIGTERM must unwind normally, so that an embedded
    # Postgres this process started is stopped rather than left running.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
