"""Bulk upsert of API records into a mirror table.

A batch is sent as one JSON array parameter (the text of the pages as
they arrived, when every record has a distinct integer id), and one ``INSERT … SELECT …
FROM jsonb_array_elements(…) ON CONFLICT DO UPDATE … WHERE … IS DISTINCT
FROM`` fills the typed columns with SQL casts from each record. A row whose
record did not change is not written, so it costs no I/O and its trigger
writes no change event. A batch with a repeated or non-integer id, or one
that fails on a bad value, goes through a temporary staging table instead,
filled by COPY as ``(id, raw)``. All SQL is built from the entity catalog
with ``psycopg.sql``; no text from a record ever becomes part of a
statement.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import psycopg
from psycopg import sql

from rulesd.servicetitan.catalog import Column, Entity
from rulesd.servicetitan.pages import RecordArray

logger = logging.getLogger(__name__)

STAGING_TABLE = "rulesd_sync_staging"

# A full read records every id it receives, for rulesd.sync.reconcile.
SEEN_STATEMENT = sql.SQL(
    "INSERT INTO st_sync_seen (entity, id) SELECT %s, id FROM {} ON CONFLICT DO NOTHING"
).format(sql.Identifier(STAGING_TABLE))
SEEN_ONE_STATEMENT = "INSERT INTO st_sync_seen (entity, id) VALUES (%s, %s) ON CONFLICT DO NOTHING"

# Errors that one malformed record can cause in the batch statement: SQLSTATE
# class 22, such as a value that does not cast or a \u0000 that jsonb
# rejects. Only these send a batch down the slow row-by-row path; anything
# else is a database failure and fails the entity.
RECORD_ERRORS: tuple[type[psycopg.Error], ...] = (psycopg.DataError,)


@dataclass(frozen=True)
class UpsertCounts:
    """Row counts of one batch written to a mirror table."""

    received: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            received=self.received + other.received,
            created=self.created + other.created,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
            failed=self.failed + other.failed,
        )


@dataclass(frozen=True)
class RecordFailure:
    """A record whose typed columns could not be filled.

    ``stored`` is true when its ``raw`` was kept with null typed columns,
    and false for a record without an id or one that jsonb rejects.
    """

    entity: str
    record_id: int | None
    error: str
    stored: bool = True


async def create_staging_table(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create this connection's staging table, whose rows vanish at every commit."""
    await conn.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} (id bigint NOT NULL, raw jsonb NOT NULL) ON COMMIT DELETE ROWS"
        ).format(sql.Identifier(STAGING_TABLE))
    )


def copy_line(record_id: int, document: bytes) -> bytes:
    """Return one COPY text-format line ``id<TAB>json``.

    COPY's text format reads backslash as an escape character and tab,
    newline and carriage return as separators. JSON strings cannot contain
    the last three raw, but JSON text as received may have them as
    whitespace between tokens, so all four are escaped.
    """
    escaped = document.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return b"%d\t%s\n" % (record_id, escaped)


def staging_documents(batch: RecordArray) -> tuple[dict[int, bytes], list[RecordFailure]]:
    """Return each record's JSON by id, keeping the last copy of a repeated id, and the records without an id.

    Export feeds with recent changes can return the same record twice, and
    one ``INSERT … ON CONFLICT`` may not touch a row twice. Records that
    arrived as text keep their text, so numbers are stored exactly as sent
    whichever path their batch takes. Decoded records are encoded again.
    """
    if batch.text is not None and batch.ids is not None:
        return dict(zip(batch.ids, batch.record_texts(), strict=True)), []

    latest: dict[int, bytes] = {}
    failures: list[RecordFailure] = []
    for record in batch.records:
        record_id = _record_id(record)
        if record_id is None:
            failures.append(RecordFailure("", None, f"record has no integer id: {_preview(record)}", stored=False))
            continue
        latest[record_id] = _dump_json(record)
    return latest, failures


def array_document(batch: RecordArray) -> str | None:
    """Return the batch as one JSON array of records with distinct integer ids, or None for the staging path.

    The common case is pages as they arrived, whose text is used unchanged.
    Records that were decoded into dicts are encoded again by orjson in one
    C call.
    """
    if batch.text is not None and batch.ids is not None:
        ids = batch.ids
        return batch.text if ids and len(set(ids)) == len(ids) else None
    return _encode_array(batch.records)


def _encode_array(records: Sequence[Mapping[str, Any]]) -> str | None:
    ids = [record.get("id") if type(record) is dict else None for record in records]
    if not ids or any(type(record_id) is not int for record_id in ids) or len(set(ids)) != len(ids):
        return None
    try:
        return orjson.dumps(records).decode()
    except TypeError:
        # An integer wider than 64 bits or an unpaired surrogate: _dump_json handles them per record.
        return None


def _record_id(record: Mapping[str, Any]) -> int | None:
    value = record.get("id") if isinstance(record, dict) else None
    if type(value) is int:  # the common case first: this runs once per record
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _dump_json(record: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(record)
    except TypeError:
        # orjson rejects integers wider than 64 bits, and the json module accepts them.
        return json.dumps(record, separators=(",", ":")).encode()


def _preview(record: Any) -> str:
    text = repr(record)
    return text if len(text) <= 120 else text[:117] + "..."


class Upserter:
    """Writes batches of one entity's records through one connection's staging table."""

    def __init__(self, entity: Entity, *, track_seen: bool = False) -> None:
        self.entity = entity
        self.track_seen = track_seen
        self.statement = upsert_statement(entity)
        self.raw_only_statement = raw_only_statement(entity)

    async def write(self, conn: psycopg.AsyncConnection[Any], batch: RecordArray) -> tuple[UpsertCounts, list[RecordFailure]]:
        """Upsert the batch inside the caller's transaction and count what changed.

        A batch that fails on a bad value is retried one record at a time
        under savepoints, so one malformed record costs only itself: it is
        stored with its ``raw`` and no typed columns, and reported as failed.
        """
        received = len(batch)
        document = array_document(batch)
        if document is not None:
            try:
                async with conn.transaction():
                    created, updated = await self._write_array(conn, document)
            except RECORD_ERRORS as exc:
                self._log_fallback(received, exc)
                documents, failures = staging_documents(batch)
                return await self._write_one_by_one(conn, received, documents, self._named(failures))
            unchanged = received - created - updated
            return UpsertCounts(received=received, created=created, updated=updated, unchanged=unchanged), []

        documents, failures = staging_documents(batch)
        failures = self._named(failures)
        if not documents:
            return UpsertCounts(received=received, failed=len(failures)), failures

        try:
            async with conn.transaction():
                data = b"".join(copy_line(record_id, text) for record_id, text in documents.items())
                created, updated = await self._write_staged(conn, data)
        except RECORD_ERRORS as exc:
            self._log_fallback(len(documents), exc)
            return await self._write_one_by_one(conn, received, documents, failures)

        unchanged = len(documents) - created - updated
        counts = UpsertCounts(received=received, created=created, updated=updated, unchanged=unchanged, failed=len(failures))
        return counts, failures

    def _named(self, failures: list[RecordFailure]) -> list[RecordFailure]:
        return [RecordFailure(self.entity.name, f.record_id, f.error, f.stored) for f in failures]

    def _log_fallback(self, count: int, exc: BaseException) -> None:
        logger.warning(
            "batch of %d %s records has an invalid value (%s), so they are stored one at a time",
            count,
            self.entity.name,
            _first_line(exc),
            extra={"event": "sync_batch_fallback", "entity": self.entity.name},
        )

    async def _write_array(self, conn: psycopg.AsyncConnection[Any], document: str) -> tuple[int, int]:
        params: tuple[str, ...] = (document, self.entity.name) if self.track_seen else (document,)
        cur = await conn.execute(array_upsert_statement(self.entity, self.track_seen), params)
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def _write_staged(self, conn: psycopg.AsyncConnection[Any], data: bytes) -> tuple[int, int]:
        async with conn.cursor() as cur:
            async with cur.copy(sql.SQL("COPY {} (id, raw) FROM STDIN").format(sql.Identifier(STAGING_TABLE))) as copy:
                await copy.write(data)
            await cur.execute(self.statement)
            row = await cur.fetchone()
            if self.track_seen:
                await cur.execute(SEEN_STATEMENT, (self.entity.name,))
            await cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(STAGING_TABLE)))
        assert row is not None
        return int(row[0]), int(row[1])

    async def _write_one_by_one(
        self,
        conn: psycopg.AsyncConnection[Any],
        received: int,
        documents: dict[int, bytes],
        failures: list[RecordFailure],
    ) -> tuple[UpsertCounts, list[RecordFailure]]:
        counts = UpsertCounts(received=received, failed=len(failures))
        for record_id, document in documents.items():
            try:
                async with conn.transaction():
                    created, updated = await self._write_staged(conn, copy_line(record_id, document))
                counts = counts + UpsertCounts(created=created, updated=updated, unchanged=1 - created - updated)
                continue
            except RECORD_ERRORS as exc:
                error = _first_line(exc)
            stored = await self._store_raw_only(conn, record_id, document)
            failures.append(RecordFailure(self.entity.name, record_id, error, stored))
            counts = counts + UpsertCounts(failed=1)
        return counts, failures

    async def _store_raw_only(self, conn: psycopg.AsyncConnection[Any], record_id: int, document: bytes) -> bool:
        """Store a record's ``raw`` with null typed columns; return False when jsonb rejects it too.

        Keeping the record means no data is lost, and a later sync with a
        fixed value fills the typed columns. A full read marks the id as
        seen either way, because ServiceTitan did return the record: it must
        not be marked missing.
        """
        stored = True
        try:
            async with conn.transaction():
                await conn.execute(self.raw_only_statement, (record_id, document.decode()))
        except (*RECORD_ERRORS, UnicodeDecodeError) as exc:
            stored = False
            logger.error(
                "%s %d could not be stored at all: %s",
                self.entity.name,
                record_id,
                _first_line(exc),
                extra={"event": "sync_record_dropped", "entity": self.entity.name, "entity_id": record_id},
            )
        if self.track_seen:
            try:
                async with conn.transaction():
                    await conn.execute(SEEN_ONE_STATEMENT, (self.entity.name, record_id))
            except RECORD_ERRORS:
                pass  # an id beyond bigint has no row to protect from being marked missing
        return stored


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@lru_cache(maxsize=None)
def upsert_statement(entity: Entity) -> sql.Composed:
    """Build the statement that moves the staging table into the entity's mirror table.

    It returns one row: (rows inserted, rows updated). ``xmax = 0`` on a
    returned row means the row was inserted rather than updated. A row is
    updated only when its ``raw`` differs, or when a full sync had marked
    it missing and it came back.
    """
    return sql.SQL(
        "WITH written AS ({insert})"
        " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(insert=_insert_clause(entity, sql.Identifier(STAGING_TABLE)))


def _insert_clause(entity: Entity, source: sql.Composable) -> sql.Composed:
    """Build the ``INSERT … ON CONFLICT … RETURNING`` that reads records from ``source`` as ``s.raw``."""
    columns = _written_columns(entity)
    names = [sql.Identifier(c.name) for c in columns]
    casts = [cast_expression(c) for c in columns]
    updates = [sql.SQL("{0} = excluded.{0}").format(name) for name in names if name != sql.Identifier("id")]
    return sql.SQL(
        "INSERT INTO {table} AS t ({names}, raw, synced_at)"
        " SELECT {casts}, s.raw, now() FROM {source} AS s"
        " ON CONFLICT (id) DO UPDATE SET {updates}, raw = excluded.raw, synced_at = excluded.synced_at,"
        " missing_since = NULL"
        " WHERE t.raw IS DISTINCT FROM excluded.raw OR t.missing_since IS NOT NULL"
        " RETURNING (xmax = 0) AS inserted"
    ).format(
        table=sql.Identifier(entity.table),
        names=sql.SQL(", ").join(names),
        casts=sql.SQL(", ").join(casts),
        source=source,
        updates=sql.SQL(", ").join(updates),
    )


@lru_cache(maxsize=None)
def array_upsert_statement(entity: Entity, track_seen: bool) -> sql.Composed:
    """Build the statement that upserts a JSON array of records into the entity's mirror table.

    Its parameters are the array, then for ``track_seen`` the entity name,
    and it returns (rows inserted, rows updated) as ``upsert_statement``
    does. Every element must be an object with a distinct integer id,
    because one ``INSERT … ON CONFLICT`` may not touch a row twice.
    """
    seen = sql.SQL(
        ", seen AS (INSERT INTO st_sync_seen (entity, id) SELECT %s, (s.raw ->> 'id')::bigint FROM s"
        " ON CONFLICT DO NOTHING)"
    )
    return sql.SQL(
        "WITH s AS MATERIALIZED (SELECT e.value AS raw FROM jsonb_array_elements(%s::jsonb) AS e),"
        " written AS ({insert}){seen}"
        " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(insert=_insert_clause(entity, sql.SQL("s")), seen=seen if track_seen else sql.SQL(""))


@lru_cache(maxsize=None)
def raw_only_statement(entity: Entity) -> sql.Composed:
    """Build the statement that stores one record's ``raw`` with every typed column null."""
    columns = [c for c in _written_columns(entity) if c.name != "id"]
    nulls = [sql.SQL("{} = NULL").format(sql.Identifier(c.name)) for c in columns]
    return sql.SQL(
        "INSERT INTO {table} AS t (id, raw, synced_at) VALUES (%s, %s::jsonb, now())"
        " ON CONFLICT (id) DO UPDATE SET {nulls}, raw = excluded.raw, synced_at = excluded.synced_at, missing_since = NULL"
    ).format(table=sql.Identifier(entity.table), nulls=sql.SQL(", ").join(nulls))


def _written_columns(entity: Entity) -> tuple[Column, ...]:
    return entity.writable_columns


def cast_expression(column: Column) -> sql.Composable:
    """Build the SQL expression that reads ``column`` from ``s.raw`` and casts it to its type.

    Postgres parses the casts itself: numbers sent as strings (accounting
    money), timestamps with seven fractional digits, ``true``/``false``.
    Empty strings become null for every non-text type, and thousands
    separators are dropped from money (``"1,234.50"``), since Postgres's
    numeric cast rejects them.
    """
    assert column.source is not None
    path = column.source.split(".")
    if column.type == "jsonb":
        return _json_path(path, as_text=False)
    text = _json_path(path, as_text=True)
    if column.type == "text":
        return text
    if column.type == "numeric":
        text = sql.SQL("replace({}, ',', '')").format(text)
    return sql.SQL("NULLIF({}, '')::{}").format(text, sql.SQL(column.type))


def _json_path(path: list[str], *, as_text: bool) -> sql.Composable:
    expression: sql.Composable = sql.SQL("s.raw")
    for index, key in enumerate(path):
        last = index == len(path) - 1
        operator = "->>" if (last and as_text) else "->"
        expression = sql.SQL("{} {} {}").format(expression, sql.SQL(operator), sql.Literal(key))
    return sql.SQL("({})").format(expression)
