"""Full-sync reconciliation: mirror rows that ServiceTitan no longer returns are marked missing.

A full read records every id it receives in ``st_sync_seen``. When the
read completes, rows of the mirror table absent from that set get
``missing_since = now()``. They are kept, not deleted, because a record
can vanish from a feed for reasons other than deletion (a permission
change, a merge). A row that shows up again in any later sync has
``missing_since`` cleared by the upsert.

The update runs without event suppression, so the change-capture trigger
writes a ``deleted`` event for each row newly marked: a disappearance
found tonight is a current change, not history.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from rulesd.servicetitan.catalog import Entity

logger = logging.getLogger(__name__)


async def mark_missing(conn: psycopg.AsyncConnection[Any], entity: Entity) -> int:
    """Mark rows the completed full read of ``entity`` did not return; return how many were marked."""
    cur = await conn.execute(
        sql.SQL(
            "UPDATE {} AS t SET missing_since = now() WHERE t.missing_since IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM st_sync_seen AS s WHERE s.entity = %s AND s.id = t.id)"
        ).format(sql.Identifier(entity.table)),
        (entity.name,),
    )
    marked = cur.rowcount
    await conn.execute("DELETE FROM st_sync_seen WHERE entity = %s", (entity.name,))
    if marked:
        logger.info(
            "%d %s rows are no longer returned by ServiceTitan; marked missing",
            marked,
            entity.name,
            extra={"event": "sync_rows_missing", "entity": entity.name, "count": marked},
        )
    return marked
