"""Random live activity that leaves the story's estimates alone.

The simulator's own activity sells and dismisses recent open estimates at
random, which could close a story estimate before its first step and
spoil the sequence the demo is there to show.
"""

from __future__ import annotations

import logging
import threading

from rulesd.servicetitan.simulator.activity import Activity
from rulesd.servicetitan.simulator.changes import random_change
from rulesd.servicetitan.simulator.tenant import Simulator

logger = logging.getLogger(__name__)

CLOSING_CHANGES = ("sell_estimate", "dismiss_estimate")


class DemoActivity(Activity):
    """The simulator's random activity, minus changes that close an estimate in ``protected``."""

    def __init__(self, sim: Simulator, per_minute: float) -> None:
        super().__init__(sim, per_minute)
        self.protected: set[int] = set()
        self._protected_lock = threading.Lock()

    def protect(self, estimate_id: int) -> None:
        """Keep random changes from selling or dismissing ``estimate_id``."""
        with self._protected_lock:
            self.protected.add(estimate_id)

    def step(self) -> None:
        with self.sim.lock:
            picked = random_change(self.sim, self._rng)
            if picked is None:
                return
            name, params = picked
            with self._protected_lock:
                if name in CLOSING_CHANGES and params.get("id") in self.protected:
                    return
            try:
                self.sim.apply(name, **params)
                self.applied += 1
            except (ValueError, LookupError) as exc:
                self.failed += 1
                logger.debug("activity change %s skipped: %s", name, exc, extra={"event": "demo_activity_skipped"})
