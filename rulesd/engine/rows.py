"""Load the current rows of records and their related records in bulk, for conditions and actions.

Given an entity and a set of ids, returns for each id a mapping of alias
(``estimate``, ``customer``, ``job``…, the names
``rulesd.servicetitan.catalog.related_entities`` returns) to that row's
typed columns, or None when the row is missing. Each alias costs one query
per batch, however many ids the batch has.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from rulesd.servicetitan.catalog import Relation, get_entity, related_entities

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Rows = dict[str, Row | None]


class RowCache:
    """Rows already read in one batch, keyed by entity name and id."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], Row | None] = {}

    def get(self, entity: str, row_id: int) -> Row | None:
        return self._rows.get((entity, row_id))

    def has(self, entity: str, row_id: int) -> bool:
        return (entity, row_id) in self._rows

    def put(self, entity: str, row_id: int, row: Row | None) -> None:
        self._rows[(entity, row_id)] = row


async def load_rows(
    conn: psycopg.AsyncConnection[Any],
    entity: str,
    ids: Collection[int],
    aliases: Iterable[str],
    cache: RowCache | None = None,
) -> dict[int, Rows]:
    """Return, for each id of ``entity``, the rows of ``aliases`` it reaches through to-one relations.

    Aliases that are not related to ``entity`` (``event``, a typo the
    loader already reported) are left out. The trigger entity's own row is
    always included under its own name.
    """
    cache = cache or RowCache()
    paths = related_entities(entity)
    needed = _aliases_with_parents(paths, set(aliases) | {entity})
    result: dict[int, Rows] = {row_id: {} for row_id in ids}

    await _fetch(conn, entity, ids, cache)
    for row_id in ids:
        result[row_id][entity] = cache.get(entity, row_id)

    for alias in sorted(needed - {entity}, key=lambda name: len(paths[name])):
        path = paths[alias]
        parent = _parent_alias(entity, path)
        relation = path[-1]
        foreign_ids = {}
        for row_id in ids:
            parent_row = result[row_id].get(parent)
            value = parent_row.get(relation.column) if parent_row else None
            foreign_ids[row_id] = int(value) if value is not None else None
        await _fetch(conn, relation.entity, {v for v in foreign_ids.values() if v is not None}, cache)
        for row_id, foreign_id in foreign_ids.items():
            result[row_id][alias] = cache.get(relation.entity, foreign_id) if foreign_id is not None else None
    return result


def _aliases_with_parents(paths: dict[str, tuple[Relation, ...]], aliases: set[str]) -> set[str]:
    # Reaching ``customer`` through ``job`` needs the job row too.
    needed: set[str] = set()
    for alias in aliases:
        path = paths.get(alias)
        if path is None:
            continue
        needed.add(alias)
        for index in range(1, len(path)):
            needed.add(path[index - 1].name)
    return needed


def _parent_alias(entity: str, path: tuple[Relation, ...]) -> str:
    return path[-2].name if len(path) > 1 else entity


async def _fetch(conn: psycopg.AsyncConnection[Any], entity_name: str, ids: Collection[int], cache: RowCache) -> None:
    missing = sorted({row_id for row_id in ids if not cache.has(entity_name, row_id)})
    if not missing:
        return
    entity = get_entity(entity_name)
    query = sql.SQL("SELECT {columns} FROM {table} WHERE id = ANY(%s)").format(
        columns=sql.SQL(", ").join(sql.Identifier(column.name) for column in entity.all_columns),
        table=sql.Identifier(entity.table),
    )
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (missing,))
        found = {row["id"]: row for row in await cursor.fetchall()}
    for row_id in missing:
        cache.put(entity_name, row_id, found.get(row_id))
