"""Context managers that start a simulator for tests, benchmarks and demos of any area."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from rulesd.config import ServiceTitanSettings
from rulesd.servicetitan.simulator.server import SimulatorServer, serve_simulator
from rulesd.servicetitan.simulator.tenant import Simulator

SERVER_TIMEOUT = 900.0  # seconds; a server left behind by a failed test stops by itself


def client_settings(server: SimulatorServer, **overrides: Any) -> ServiceTitanSettings:
    """Return client settings that reach ``server``, with no page delay and no rate limit."""
    settings = ServiceTitanSettings(
        environment="production",
        tenant_id=server.tenant_id,
        client_id=server.client_id,
        client_secret=server.client_secret,
        app_key=server.app_key,
        auth_url=server.base_url,
        api_url=server.base_url,
        page_size=500,
        page_delay=timedelta(0),
        rate_limit=0.0,
        timeout=timedelta(seconds=30),
        max_retries=10,
    )
    return dataclasses.replace(settings, **overrides)


@contextmanager
def running_simulator(
    *, seed: int = 1, customers: int = 200, **simulator_options: Any
) -> Iterator[SimulatorServer]:
    """Generate a tenant and serve it on a free loopback port for the ``with`` block."""
    sim = Simulator(seed=seed, customers=customers, **simulator_options)
    with serve_simulator(sim, timeout=SERVER_TIMEOUT) as server:
        yield server
