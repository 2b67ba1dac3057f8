"""The advisory lock that lets only one process sync a database at a time.

Several daemons may share one database; whichever holds this session-level
lock runs syncs, and the others skip theirs. Postgres releases the lock
when the holding connection closes, so a killed process never leaves it
stuck.
"""

from __future__ import annotations

import hashlib
import logging
from types import TracebackType
from typing import Any

import psycopg

from rulesd.db.connect import async_connect

logger = logging.getLogger(__name__)

# pg_advisory_lock key: the first 8 bytes of sha256("rulesd sync") as a signed bigint.
SYNC_LOCK_KEY = int.from_bytes(hashlib.sha256(b"rulesd sync").digest()[:8], "big", signed=True)


class SyncLock:
    """An async context manager that tries once to take the sync lock.

    ``acquired`` is false when another process has it. The connection
    stays open for as long as the block runs, because closing it releases
    the lock.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.acquired = False
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> SyncLock:
        self._conn = await async_connect(self.database_url, autocommit=True)
        try:
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (SYNC_LOCK_KEY,))
            row = await cur.fetchone()
        except BaseException:
            await self._conn.close()
            raise
        self.acquired = bool(row and row[0])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is None:
            return
        try:
            if self.acquired and not self._conn.closed:
                await self._conn.execute("SELECT pg_advisory_unlock(%s)", (SYNC_LOCK_KEY,))
        except psycopg.Error as error:
            # Closing the connection below releases the lock anyway.
            logger.warning("could not release the sync lock: %s", error, extra={"event": "sync_lock_release_failed"})
        finally:
            await self._conn.close()
            self._conn = None
