"""Fixtures of the ServiceTitan tests: a simulator served on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rulesd.servicetitan.simulator import SimulatorServer
from rulesd.servicetitan.simulator.testing import running_simulator


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SimulatorServer]:
    """A small tenant shared by the tests of one module; faults are reset around each test."""
    with running_simulator(seed=3, customers=150) as server:
        yield server


@pytest.fixture
def server(shared_server: SimulatorServer) -> Iterator[SimulatorServer]:
    shared_server.faults.reset()
    yield shared_server
    shared_server.faults.reset()
