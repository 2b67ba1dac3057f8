"""``rulesd test``: run rule scenario files (``*.test.yaml``) on the real engine with a fake clock."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import anyio
import click
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rulesd.cli.context import CliContext
from rulesd.db import migrate
from rulesd.engine.scenarios import ScenarioError, ScenarioRunner, find_scenario_files, load_scenarios
from rulesd.errors import DatabaseError

pass_context = click.make_pass_decorator(CliContext)

DEFAULT_PATHS = (Path("rules"),)


@click.command(name="test")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))
@click.option("--verbose", "-v", is_flag=True, help="Show the engine's log lines while scenarios run.")
@pass_context
def test(context: CliContext, paths: tuple[Path, ...], verbose: bool) -> None:
    """Run the scenarios in PATHS (files or directories; default: rules/) and report what differed.

    Each run uses a temporary database on the configured Postgres server,
    created and dropped by this command.
    """
    files = find_scenario_files(list(paths or [p for p in DEFAULT_PATHS if p.exists()]))
    if not files:
        raise click.UsageError("no *.test.yaml scenario files found; pass files or directories")
    try:
        scenarios = [scenario for path in files for scenario in load_scenarios(path)]
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc

    server_url = context.database_url_or_start()
    if not verbose:
        # The scenario's own report is the output; engine and migration
        # lines would bury it.
        # Scripted retries log warnings by design; errors still show.
        for name in ("rulesd.engine", "rulesd.db"):
            logging.getLogger(name).setLevel(logging.ERROR)
    failed = 0
    with temporary_database(server_url) as url:
        runner = ScenarioRunner(url)
        for scenario in scenarios:
            result = anyio.run(runner.run, scenario, backend="asyncio")
            label = f"{scenario.path}: {scenario.name}"
            if result.ok:
                click.echo(f"ok      {label}")
                continue
            failed += 1
            click.echo(f"FAILED  {label}")
            for line in result.failures:
                click.echo(f"        {line}")
    click.echo(f"{len(scenarios) - failed} passed, {failed} failed, {len(files)} file(s)")
    if failed:
        raise SystemExit(1)


class temporary_database:  # noqa: N801 - used as a context manager, named like one
    """Create a migrated database beside ``server_url``'s and drop it on exit."""

    def __init__(self, server_url: str) -> None:
        self._server_url = server_url
        self._name = f"rulesd_scenarios_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> str:
        try:
            with psycopg.connect(self._server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self._name)))
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot create the temporary scenario database {self._name}: {exc}",
                hint="rulesd test needs a Postgres user allowed to CREATE DATABASE",
            ) from exc
        url = make_conninfo(self._server_url, dbname=self._name)
        migrate.upgrade(url)
        return url

    def __exit__(self, *exc_info: object) -> None:
        base = conninfo_to_dict(self._server_url).get("dbname") or "postgres"
        admin_url = make_conninfo(self._server_url, dbname=base)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self._name)))
