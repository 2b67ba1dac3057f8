"""Fixtures for sync tests: a simulator tenant on loopback and settings that reach it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest

from rulesd.config import Settings, SyncSettings
from rulesd.servicetitan.simulator import SimulatorServer
from rulesd.servicetitan.simulator.testing import client_settings, running_simulator


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """A 200-customer tenant (about 5,000 records) served on 127.0.0.1."""
    with running_simulator(seed=3, customers=200) as server:
        yield server


def sync_settings(server: SimulatorServer, **sync: object) -> Settings:
    """Settings that reach ``server`` with small batches, so a sync spans many transactions."""
    options: dict[str, object] = {"batch_size": 400, "concurrency": 4, "overlap": timedelta(minutes=2)}
    options.update(sync)
    return Settings(servicetitan=client_settings(server), sync=dataclasses.replace(SyncSettings(), **options))
