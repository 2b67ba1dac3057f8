"""A resettable wake-up signal that engine loops sleep on."""

from __future__ import annotations

import anyio

from rulesd.engine.clock import Clock


class Wakeup:
    """Wake a sleeping loop early: a NOTIFY arrived, a step finished or the fake clock jumped.

    A ``set`` that arrives while nobody waits is kept, so the next ``wait``
    returns at once. Create it inside the event loop.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None, clock: Clock | None = None) -> bool:
        """Sleep until ``set``, a jump of ``clock`` or ``timeout`` seconds; return True when woken."""
        event = self._event
        if clock is not None:
            clock.subscribe(event)
        with anyio.move_on_after(timeout):
            await event.wait()
        if event.is_set():
            # Consume the signal: the caller scans now, so a set() that
            # arrives after this point belongs to the next wait.
            if self._event is event:
                self._event = anyio.Event()
            return True
        return False
