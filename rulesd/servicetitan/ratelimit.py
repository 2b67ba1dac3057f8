"""A client-side request rate limit, shared by every client of one tenant in the process."""

from __future__ import annotations

import asyncio
import time
import weakref


class RateLimiter:
    """Space requests so no more than ``rate`` start in any one-second window.

    A token bucket holding at most ``rate`` tokens (one second's worth), so a
    burst after a quiet spell never exceeds what ServiceTitan allows. A rate
    of 0 or less disables the limit.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for a free slot; return the seconds spent waiting."""
        if self.rate <= 0:
            return 0.0
        waited = 0.0
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                delay = (1.0 - self._tokens) / self.rate
                waited += delay
                await asyncio.sleep(delay)


# One limiter per (API URL, tenant) and event loop: ServiceTitan's limit is
# per application per tenant, so clients of one tenant in one process share it.
_LIMITERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], RateLimiter]
] = weakref.WeakKeyDictionary()


def shared_limiter(api_url: str, tenant_id: int, rate: float) -> RateLimiter:
    """Return the limiter of ``tenant_id`` at ``api_url`` for the running event loop."""
    limiters = _LIMITERS.setdefault(asyncio.get_running_loop(), {})
    limiter = limiters.get((api_url, tenant_id))
    if limiter is None or limiter.rate != rate:
        limiter = RateLimiter(rate)
        limiters[(api_url, tenant_id)] = limiter
    return limiter
