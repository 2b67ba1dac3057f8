"""Faults the simulator injects on request: throttling, server errors, cut bodies, dead tokens."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Faults:
    """The fault settings of one simulator server; change them at any time.

    Counters ending in ``_next`` apply to that many upcoming API requests
    (not token requests). ``rate_limit`` is requests per second per tenant
    above which the API responds with 429, as ServiceTitan does above 60/s; None
    disables it. ``throttle_wait`` is the wait in seconds a 429 states in its
    title and, when ``retry_after`` is set, in a ``Retry-After`` header.
    ``token_lifetime`` is the ``expires_in`` of new tokens, and
    ``token_dies_after`` makes tokens stop working sooner than that.
    """

    rate_limit: float | None = None
    throttle_next: int = 0
    throttle_wait: float = 1.0
    retry_after: bool = True
    fail_next: int = 0
    fail_status: int = 503
    error_rate: float = 0.0
    truncate_next: int = 0
    truncate_rate: float = 0.0
    delay: float = 0.0  # seconds added before every API response
    token_lifetime: float = 900.0
    token_dies_after: float | None = None
    seed: int = 7
    token_generation: int = field(default=0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _window: list[float] = field(default_factory=list, repr=False, compare=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def storm(self, requests: int, *, wait: float = 1.0) -> None:
        """Respond to the next ``requests`` API calls with 429."""
        with self._lock:
            self.throttle_next = requests
            self.throttle_wait = wait

    def burst(self, requests: int, *, status: int = 503) -> None:
        """Respond to the next ``requests`` API calls with a 5xx and an HTML body."""
        with self._lock:
            self.fail_next = requests
            self.fail_status = status

    def truncate(self, requests: int) -> None:
        """Cut the body of the next ``requests`` API responses short."""
        with self._lock:
            self.truncate_next = requests

    def expire_tokens(self) -> None:
        """Make every token issued so far invalid, as if it had expired."""
        with self._lock:
            self.token_generation += 1

    def reset(self) -> None:
        """Turn every fault off."""
        with self._lock:
            self.rate_limit = None
            self.throttle_next = self.fail_next = self.truncate_next = 0
            self.error_rate = self.truncate_rate = self.delay = 0.0
            self.token_lifetime = 900.0
            self.token_dies_after = None

    def update(self, values: dict[str, Any]) -> None:
        """Set fault fields from a mapping (the admin API); raise ``ValueError`` on unknown keys."""
        allowed = {name for name in self.as_dict()}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if not item.name.startswith("_") and item.name != "seed"
        }

    def next_fault(self) -> str | None:
        """Decide the fault of one API request: 'throttle', 'fail', 'truncate' or None."""
        with self._lock:
            now = time.monotonic()
            if self.rate_limit is not None:
                # Only accepted requests use up the quota, so a client that
                # backs off gets through once the second has passed.
                self._window = [t for t in self._window if now - t < 1.0]
                if len(self._window) >= self.rate_limit:
                    return "throttle"
                self._window.append(now)
            if self.throttle_next > 0:
                self.throttle_next -= 1
                return "throttle"
            if self.fail_next > 0:
                self.fail_next -= 1
                return "fail"
            if self.error_rate and self._rng.random() < self.error_rate:
                return "fail"
            if self.truncate_next > 0:
                self.truncate_next -= 1
                return "truncate"
            if self.truncate_rate and self._rng.random() < self.truncate_rate:
                return "truncate"
            return None
