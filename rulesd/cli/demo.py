"""``rulesd demo``: run the whole system on a simulated tenant and watch it work."""

from __future__ import annotations

from pathlib import Path

import click

from rulesd.cli.context import CliContext
from rulesd.demo import DemoOptions, run_demo
from rulesd.demo.database import DEMO_DATA_DIR
from rulesd.demo.runner import describe_totals
from rulesd.demo.settings import DEFAULT_SPEED, shipped_rules

pass_context = click.make_pass_decorator(CliContext)


@click.command()
@click.option(
    "--speed",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_SPEED,
    show_default=True,
    help="How many times faster than real time demo time runs; the default passes two days in a minute.",
)
@click.option(
    "--exit-after",
    type=click.FloatRange(min=1.0),
    default=None,
    metavar="SECONDS",
    help="Stop cleanly this many real seconds after the command starts (exit status 0). Default: run until Ctrl-C.",
)
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Rule directory or file to run. Default: the rules/ directory that ships with rulesd.",
)
@click.option(
    "--activity",
    type=click.FloatRange(min=0.0),
    default=30.0,
    show_default=True,
    help="Random changes per real minute in the simulated tenant, besides the scripted story.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulated tenant.")
@click.option(
    "--sync-interval",
    type=click.FloatRange(min=0.5),
    default=3.0,
    show_default=True,
    help="Real seconds between incremental syncs.",
)
@pass_context
def demo(
    context: CliContext,
    speed: float,
    exit_after: float | None,
    rules_dir: Path | None,
    activity: float,
    seed: int,
    sync_interval: float,
) -> None:
    """Run rulesd on a simulated ServiceTitan tenant and show what it does.

    Starts a local simulator (200 customers, live activity), an embedded
    Postgres in .rulesd/demo-pgdata, the initial sync, then the daemon with
    the rules. A scripted story creates estimates over $500; one gets its
    text reminder two demo days later, then is sold and its follow-ups stop.

    The demo database is emptied at the start of every run; with
    --database-url the demo empties that database (it rejects one that
    contains a mirror the demo did not create). Nothing is sent: the run is
    always a dry run, no SMS or e-mail provider is configured, and the
    configuration file is not read. With ANTHROPIC_API_KEY set, Claude
    drafts the messages.
    """
    options = DemoOptions(
        rules_dir=rules_dir or shipped_rules(),
        database_url=context.database_url,
        data_dir=DEMO_DATA_DIR,
        speed=speed,
        exit_after=exit_after,
        sync_interval=sync_interval,
        activity=activity,
        seed=seed,
    )
    totals = run_demo(options)
    if totals is None:
        click.echo("demo interrupted before the daemon started; nothing was sent", err=True)
        return
    click.echo(describe_totals(totals), err=True)
