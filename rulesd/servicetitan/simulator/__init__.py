"""A local ServiceTitan API: a generated tenant served over HTTP, with faults and live activity."""

from rulesd.servicetitan.simulator.faults import Faults
from rulesd.servicetitan.simulator.server import SimulatorServer, serve_simulator
from rulesd.servicetitan.simulator.tenant import SCALES, Behaviours, Simulator, customers_for_scale

__all__ = [
    "SCALES",
    "Behaviours",
    "Faults",
    "Simulator",
    "SimulatorServer",
    "customers_for_scale",
    "serve_simulator",
]
