"""The ServiceTitan tenant a database mirrors, recorded by the first sync in ``st_tenant``."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from rulesd.errors import SyncError

logger = logging.getLogger(__name__)


async def claim_tenant(conn: psycopg.AsyncConnection[Any], tenant_id: int, api_url: str) -> None:
    """Record ``tenant_id`` as the mirrored tenant, or raise ``SyncError`` when the database mirrors another one."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO st_tenant (tenant_id, api_url) VALUES (%s, %s) ON CONFLICT (singleton) DO NOTHING"
            " RETURNING tenant_id",
            (tenant_id, api_url),
        )
        if await cur.fetchone() is not None:
            logger.info(
                "this database now mirrors ServiceTitan tenant %d at %s",
                tenant_id,
                api_url,
                extra={"event": "sync_tenant_recorded", "tenant_id": tenant_id},
            )
            return
        cur = await conn.execute("SELECT tenant_id, api_url FROM st_tenant")
        row = await cur.fetchone()
    assert row is not None
    mirrored, mirrored_url = int(row[0]), str(row[1])
    if mirrored != tenant_id:
        raise SyncError(
            f"this database mirrors ServiceTitan tenant {mirrored} (first synced from {mirrored_url}),"
            f" not tenant {tenant_id}",
            hint="check SERVICE_TITAN_TENANT_ID, or give this tenant its own database (RULESD_DATABASE_URL)",
        )
