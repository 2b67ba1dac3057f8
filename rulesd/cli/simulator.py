"""``rulesd simulator``: run the local ServiceTitan simulator."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

import click

from rulesd.servicetitan.simulator import SCALES, Simulator, customers_for_scale
from rulesd.servicetitan.simulator.server import DEFAULT_PORT, SimulatorServer

logger = logging.getLogger(__name__)


@click.group()
def simulator() -> None:
    """Run a local stand-in for the ServiceTitan API."""


@simulator.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="TCP port.")
@click.option("--seed", default=1, show_default=True, type=int,
              help="Seed of the generated tenant; the same seed gives the same records.")
@click.option("--customers", type=click.IntRange(min=1), default=None,
              help="Number of customers to generate (about 22 records each in all).")
@click.option("--scale", type=click.Choice(sorted(SCALES)), default=None,
              help="Named size: small (200 customers), medium (50,000), large (200,000).")
@click.option("--tenant-id", default=1000, show_default=True, type=int, help="Tenant id.")
@click.option("--activity", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Live changes per minute (new jobs, sold estimates, payments...).")
@click.option("--client-id", default="cid.simulator", show_default=True,
              help="Client id the token endpoint accepts.")
@click.option("--client-secret", default="cs.simulator-secret", show_default=True,
              help="Client secret the token endpoint accepts (a test value, not a real secret).")
@click.option("--app-key", default="ak1.simulator", show_default=True,
              help="ST-App-Key header value every API request must carry.")
@click.option("--rate-limit", type=float, default=None,
              help="Respond with 429 above this many requests per second. Default: no limit.")
@click.option("--warm", is_flag=True,
              help="Serialize every record before serving, so the first full sync is not slowed by "
              "record building (a medium tenant takes about a minute of CPU and 1 GB).")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    seed: int,
    customers: int | None,
    scale: str | None,
    tenant_id: int,
    activity: float,
    client_id: str,
    client_secret: str,
    app_key: str,
    rate_limit: float | None,
    warm: bool,
) -> None:
    """Serve a generated ServiceTitan tenant over HTTP until interrupted."""
    if customers is not None and scale is not None:
        raise click.UsageError("give --customers or --scale, not both")
    count = customers if customers is not None else customers_for_scale(scale or "small")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    started = time.monotonic()
    sim = Simulator(seed=seed, customers=count, tenant_id=tenant_id, activity=activity)
    total = sum(sim.counts().values())
    if warm:
        sim.warm_cache()
    server = SimulatorServer(
        sim, host, port, client_id=client_id, client_secret=client_secret, app_key=app_key
    )
    server.faults.rate_limit = rate_limit
    click.echo(
        f"# ServiceTitan simulator: {total:,} records ({count:,} customers, seed {seed}) "
        f"ready in {time.monotonic() - started:.1f} s"
    )
    click.echo(f"  export SERVICE_TITAN_AUTH_URL={server.base_url}")
    click.echo(f"  export SERVICE_TITAN_API_URL={server.base_url}")
    click.echo(f"  export SERVICE_TITAN_TENANT_ID={tenant_id}")
    click.echo(f"  export SERVICE_TITAN_CLIENT_ID={client_id}")
    click.echo(f"  export SERVICE_TITAN_CLIENT_SECRET={client_secret}")
    click.echo(f"  export SERVICE_TITAN_APP_KEY={app_key}")
    click.echo(f"# admin API: {server.base_url}/_sim/ (counts, changes, faults, stats)")

    def interrupt(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    click.echo("simulator stopped")
