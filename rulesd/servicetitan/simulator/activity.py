"""Live activity: a background thread that applies random plausible changes at a steady rate."""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING

from rulesd.servicetitan.simulator.changes import random_change

if TYPE_CHECKING:
    from rulesd.servicetitan.simulator.tenant import Simulator

logger = logging.getLogger(__name__)


class Activity:
    """Apply about ``per_minute`` changes a minute to ``sim`` until stopped."""

    def __init__(self, sim: Simulator, per_minute: float, *, seed: int | None = None) -> None:
        self.sim = sim
        self.per_minute = per_minute
        self.applied = 0
        self.failed = 0
        self._rng = random.Random(sim.seed * 7919 if seed is None else seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulator-activity", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            rate = self.per_minute
            if rate <= 0:
                self._stop.wait(1.0)
                continue
            # Exponential gaps make the changes a Poisson stream, not a metronome.
            if self._stop.wait(self._rng.expovariate(rate / 60.0)):
                return
            self.step()

    def step(self) -> None:
        """Apply one random change now."""
        with self.sim.lock:
            picked = random_change(self.sim, self._rng)
            if picked is None:
                return
            name, params = picked
            try:
                self.sim.apply(name, **params)
                self.applied += 1
            except (ValueError, LookupError) as exc:
                self.failed += 1
                logger.debug("activity change %s skipped: %s", name, exc,
                             extra={"event": "simulator_activity_skipped"})
