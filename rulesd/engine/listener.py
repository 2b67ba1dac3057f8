"""The listener: one autocommit connection that LISTENs for change events and wakes the trigger engine.

On every connect and reconnect it runs LISTEN first, then wakes the
trigger engine to scan for unprocessed events, then waits for
notifications. The other order would leave a window in which a commit is
neither scanned nor notified. NOTIFY is only a wake-up: the events stay in
``workflow_events`` until processed, and a poll every
``engine.poll_interval`` catches anything a notification missed.

A half-open TCP connection raises nothing, so the connection is probed
with ``SELECT 1`` under a hard timeout. A failed probe or any error
reconnects with capped, jittered backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import psycopg

from rulesd.engine import metrics
from rulesd.engine.wakeup import Wakeup

logger = logging.getLogger(__name__)

CHANNEL = "rulesd_events"
PROBE_INTERVAL = 15.0  # seconds between liveness probes of the listen connection
PROBE_TIMEOUT = 5.0  # seconds a probe may take before the connection is treated as dead
BACKOFF_START = 0.5  # seconds before the first reconnect attempt
BACKOFF_MAX = 30.0  # seconds; the longest wait between reconnect attempts
LOG_EVERY = 60.0  # seconds between repeated reconnect-failure log lines


class Listener:
    """Keeps a LISTEN connection open and calls ``wake`` on connect, on NOTIFY and on every poll."""

    def __init__(
        self,
        database_url: str,
        wake: Wakeup,
        *,
        poll_interval: float,
        on_state: Callable[[str], None] | None = None,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._url = database_url
        self._wake = wake
        self._poll_interval = poll_interval
        self._probe_interval = probe_interval
        self._on_state = on_state
        self.state = "starting"
        self.notifications = 0
        self.connects = 0

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            metrics.LISTENER_CONNECTED.set(1 if state == "listening" else 0)
            if self._on_state is not None:
                self._on_state(state)

    async def run(self) -> None:
        """Listen until cancelled, polling every ``poll_interval`` whatever the connection does."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._poll)
            await self._listen_forever()

    async def _poll(self) -> None:
        while True:
            await anyio.sleep(self._poll_interval)
            logger.debug("poll: waking the trigger engine", extra={"event": "listener_poll"})
            self._wake.set()

    async def _listen_forever(self) -> None:
        delay = BACKOFF_START
        failures = 0
        last_logged = 0.0
        while True:
            connects_before = self.connects
            try:
                await self._listen_once()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self.connects > connects_before:
                    # This attempt connected and later failed: a new outage.
                    failures = 0
                    delay = BACKOFF_START
                failures += 1
                self._set_state("reconnecting")
                now = time.monotonic()
                if failures == 1 or now - last_logged >= LOG_EVERY:
                    logger.warning(
                        "listen connection failed (%s failure(s) in a row): %s; reconnecting in up to %.1f s",
                        failures, _one_line(exc), delay,
                        extra={"event": "listener_reconnect", "failures": failures},
                    )
                    last_logged = now
                await anyio.sleep(random.uniform(delay / 2, delay))
                delay = min(BACKOFF_MAX, delay * 2)

    async def _listen_once(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10)
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.connects += 1
            self._set_state("listening")
            logger.info("listening for change events on channel %s", CHANNEL, extra={"event": "listener_connected"})
            # LISTEN is in place, so scanning now misses nothing.
            self._wake.set()
            while True:
                # notifies() holds the connection lock while it waits, so
                # it runs in slices and the probe runs between them.
                # Notifications that arrive in between are kept by psycopg.
                async for _notify in conn.notifies(timeout=self._probe_interval):
                    self.notifications += 1
                    self._wake.set()
                await self._probe(conn)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001 - closing a dead connection may fail any way
                    pass

    async def _probe(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with anyio.move_on_after(PROBE_TIMEOUT) as timeout:
            await conn.execute("SELECT 1")
        if timeout.cancelled_caught:
            raise TimeoutError(f"the listen connection did not answer a probe within {PROBE_TIMEOUT} s")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
