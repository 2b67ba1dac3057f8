"""``rulesd demo``: the whole system on a simulated tenant, with demo time running faster than real time."""

from rulesd.demo.runner import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
