"""``rulesd contacts``: keep addresses off the agent's list by hand (suppress, unsuppress, list)."""

from __future__ import annotations

import click
import psycopg

from rulesd.agent import suppressions
from rulesd.agent.addresses import Channel, normalize_address
from rulesd.cli.context import CliContext
from rulesd.db.connect import connect
from rulesd.errors import DatabaseError

pass_context = click.make_pass_decorator(CliContext)

CHANNEL_OPTION = click.Choice(["sms", "email"])


@click.group()
def contacts() -> None:
    """Manage the suppression list: addresses rulesd never messages."""


@contacts.command()
@click.argument("address")
@click.option("--channel", type=CHANNEL_OPTION, default=None,
              help="Channel to suppress. Default: email when ADDRESS contains @, else sms.")
@click.option("--reason", default=None, help="Why, for the audit trail (stored with the row).")
@pass_context
def suppress(context: CliContext, address: str, channel: str | None, reason: str | None) -> None:
    """Never message ADDRESS (a phone number or an e-mail address) again."""
    chosen = _channel(address, channel)
    normalized = _normalized(chosen, address)
    with _connection(context) as conn:
        added = suppressions.suppress(conn, chosen, normalized, reason)
    if added:
        click.echo(f"suppressed {chosen} {normalized}")
    else:
        click.echo(f"{chosen} {normalized} was already suppressed by hand")


@contacts.command()
@click.argument("address")
@click.option("--channel", type=CHANNEL_OPTION, default=None,
              help="Channel to lift. Default: email when ADDRESS contains @, else sms.")
@pass_context
def unsuppress(context: CliContext, address: str, channel: str | None) -> None:
    """Allow messages to ADDRESS again (manual and provider opt-outs only)."""
    chosen = _channel(address, channel)
    normalized = _normalized(chosen, address)
    with _connection(context) as conn:
        removed = suppressions.unsuppress(conn, chosen, normalized)
        remaining = [row for row in suppressions.list_suppressions(conn, chosen) if row.address == normalized]
    click.echo(f"removed {removed} suppression(s) of {chosen} {normalized}")
    if remaining:
        click.echo(f"{normalized} stays suppressed: doNotText is set on the contact in ServiceTitan; "
                   "clear it there and the next sync lifts it")


@contacts.command(name="list")
@click.option("--channel", type=CHANNEL_OPTION, default=None, help="Show one channel only.")
@pass_context
def list_command(context: CliContext, channel: str | None) -> None:
    """List suppressed addresses, newest first."""
    with _connection(context) as conn:
        rows = suppressions.list_suppressions(conn, channel)  # type: ignore[arg-type]
    if not rows:
        click.echo("no suppressed addresses")
        return
    for row in rows:
        when = row.created_at.strftime("%Y-%m-%d %H:%M %Z")
        click.echo(f"{row.channel:<6} {row.address:<32} {row.source:<13} {when}  {row.reason or ''}".rstrip())


def _channel(address: str, channel: str | None) -> Channel:
    if channel is not None:
        return channel  # type: ignore[return-value]
    return "email" if "@" in address else "sms"


def _normalized(channel: Channel, address: str) -> str:
    normalized = normalize_address(channel, address)
    if normalized is None:
        kind = "phone number" if channel == "sms" else "e-mail address"
        raise click.BadParameter(f"{address!r} is not a valid {kind}", param_hint="ADDRESS")
    return normalized


class _connection:
    """An autocommit connection whose missing-table errors point at ``rulesd db upgrade``."""

    def __init__(self, context: CliContext) -> None:
        self.conn = connect(context.database_url_or_start(), autocommit=True)

    def __enter__(self) -> psycopg.Connection:
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        self.conn.close()
        if isinstance(error, psycopg.errors.UndefinedTable):
            raise DatabaseError("the suppressions table does not exist",
                                hint="run `rulesd db upgrade` first") from error
        if isinstance(error, psycopg.Error):
            raise DatabaseError(f"suppression list query failed: {error}") from error

