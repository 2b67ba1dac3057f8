"""The sync orchestrator: reads catalog entities from ServiceTitan and writes them to their mirror tables.

Up to ``sync.concurrency`` entities run at once; the client's rate
limiter keeps them all inside the tenant's request budget. An incremental
sync runs them tier by tier (reference data, then customers and
locations, then work, then money), so that a record's customer is stored
before the record's own change event fires. An initial or full sync fires
no events, so it starts entities in the same order but does not wait for
a tier to finish before starting the next.

Each entity has its own connection, and its pages are read one or two
ahead of the writer. Every batch commits in one transaction with the
entity's checkpoint and its sync-log counts. A sync killed at any point
therefore resumes at the last committed batch, with nothing duplicated and
nothing skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from rulesd.config import Settings
from rulesd.db.connect import async_connect
from rulesd.errors import AuthenticationError, RulesdError, SyncError
from rulesd.logs import log_context
from rulesd.servicetitan.catalog import ENTITY_LIST, Entity, get_entity
from rulesd.servicetitan.client import ServiceTitanClient
from rulesd.servicetitan.pages import RecordArray
from rulesd.sync import state
from rulesd.sync.lock import SyncLock
from rulesd.sync.progress import NullProgress, ProgressReporter
from rulesd.sync.reconcile import mark_missing
from rulesd.sync.report import EntityResult, SyncReport
from rulesd.sync.state import EntityState, SyncKind
from rulesd.sync.tenant import claim_tenant
from rulesd.sync.upsert import RecordFailure, Upserter, UpsertCounts, create_staging_table

logger = logging.getLogger(__name__)

READ_AHEAD_PAGES = 2  # pages fetched ahead of the writer, per entity
BATCH_ATTEMPTS = 5  # tries of one batch transaction that hits a deadlock or serialization failure
RETRYABLE_ERRORS: tuple[type[psycopg.Error], ...] = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
MAX_LOGGED_FAILURES = 5  # bad records logged one by one per entity and run; the rest are counted

SYNC_KINDS: tuple[SyncKind, ...] = ("initial", "incremental", "full")


@dataclass(frozen=True)
class ReadPlan:
    """The read one entity gets in this run.

    ``cursor`` is where an export read starts (a continuation token), or
    for a resumed list read only a note of the page reached, because list
    reads restart from page 1. ``since`` is an incremental list read's
    lower bound on ``modifiedOn``.
    """

    kind: SyncKind
    resume: bool = False
    cursor: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class Chunk:
    """One page from ServiceTitan and the cursor that follows it."""

    records: RecordArray
    cursor: str | None
    total: int | None = None


def plan_read(entity: Entity, requested: SyncKind, saved: EntityState, overlap: timedelta) -> ReadPlan:
    """Decide which read ``entity`` gets when ``requested`` is asked for.

    An unfinished initial or full read is resumed by a request of the same
    kind or by a plain incremental sync. Events stay suppressed for it, so
    an interrupted history load never turns into workflow starts. An
    entity that never finished a read gets an initial load in place of an
    incremental one, for the same reason.
    """
    if saved.run_kind is not None and requested in ("incremental", saved.run_kind):
        return ReadPlan(kind=saved.run_kind, resume=True, cursor=saved.run_cursor)
    if requested != "incremental":
        return ReadPlan(kind=requested)
    if not saved.ever_completed:
        return ReadPlan(kind="initial")
    if entity.export_path is not None:
        if saved.continue_from is None:
            return ReadPlan(kind="initial")
        return ReadPlan(kind="incremental", cursor=saved.continue_from)
    since = saved.watermark - overlap if saved.watermark is not None else None
    return ReadPlan(kind="incremental", since=since)


def select_entities(names: Sequence[str] | None) -> list[Entity]:
    """Return the named entities (all of them when ``names`` is empty) in sync order."""
    if not names:
        chosen = list(ENTITY_LIST)
    else:
        chosen = []
        for name in dict.fromkeys(names):
            try:
                chosen.append(get_entity(name))
            except KeyError as exc:
                raise SyncError(str(exc.args[0]), hint="pass catalog entity names to --entity") from None
    order = {entity.name: index for index, entity in enumerate(ENTITY_LIST)}
    return sorted(chosen, key=lambda e: (e.tier, order[e.name]))


async def run_sync(
    settings: Settings,
    database_url: str,
    *,
    kind: SyncKind = "incremental",
    entities: Sequence[str] | None = None,
    progress: ProgressReporter | None = None,
    client: ServiceTitanClient | None = None,
    take_lock: bool = True,
    run_id: uuid.UUID | None = None,
) -> SyncReport:
    """Run one sync of ``kind`` over ``entities`` (default: every catalog entity).

    Raise ``SyncError`` when another process holds the sync lock. A failing
    entity does not stop the others: its result has status ``failed`` and
    the error, and the report's ``succeeded`` is false. Pass
    ``take_lock=False`` only while already holding the lock (the scheduler).
    """
    if kind not in SYNC_KINDS:
        raise SyncError(f"unknown sync kind {kind!r}; expected one of {', '.join(SYNC_KINDS)}")
    selected = select_entities(entities)
    run_id = run_id or uuid.uuid4()
    reporter = progress or NullProgress()

    with log_context(sync_run_id=str(run_id)):
        if not take_lock:
            return await _run_locked(settings, database_url, kind, selected, reporter, client, run_id)
        async with SyncLock(database_url) as lock:
            if not lock.acquired:
                raise SyncError(
                    "another rulesd process is syncing this database",
                    hint="wait for it to finish; only one process syncs a database at a time",
                )
            return await _run_locked(settings, database_url, kind, selected, reporter, client, run_id)


async def _run_locked(
    settings: Settings,
    database_url: str,
    kind: SyncKind,
    selected: list[Entity],
    reporter: ProgressReporter,
    client: ServiceTitanClient | None,
    run_id: uuid.UUID,
) -> SyncReport:
    started = time.monotonic()
    own_client = client is None
    api = client or ServiceTitanClient(settings.servicetitan)
    conn = await async_connect(database_url, autocommit=True)
    try:
        await claim_tenant(conn, api.tenant_id, api.api_url)
        await state.fail_interrupted_runs(conn)
    finally:
        await conn.close()

    logger.info(
        "%s sync of %d entities started", kind, len(selected), extra={"event": "sync_started", "kind": kind}
    )
    try:
        if own_client:
            await api.__aenter__()
            # Wrong credentials or an unusable URL fail here once, with their
            # own message and hint, instead of once per entity.
            await api.check_credentials()
        results = await _run_tiers(settings, database_url, kind, selected, reporter, api, run_id)
    finally:
        if own_client:
            await api.__aexit__(None, None, None)

    report = SyncReport(run_id=run_id, kind=kind, results=tuple(results), seconds=time.monotonic() - started)
    _log_report(report)
    return report


async def _run_tiers(
    settings: Settings,
    database_url: str,
    kind: SyncKind,
    selected: list[Entity],
    reporter: ProgressReporter,
    client: ServiceTitanClient,
    run_id: uuid.UUID,
) -> list[EntityResult]:
    limit = asyncio.Semaphore(max(1, settings.sync.concurrency))

    async def guarded(entity: Entity) -> EntityResult:
        async with limit:
            sync = EntitySync(entity, settings, database_url, client, run_id, kind, reporter)
            return await sync.run()

    if kind != "incremental":
        # A history load writes no events, so no record needs its customer
        # stored first. Every entity waits in one queue, in tier order, and
        # the next one starts as soon as any finishes. Waiting for a whole
        # tier left cores idle behind its largest entity.
        return list(await asyncio.gather(*(guarded(entity) for entity in selected)))

    results: list[EntityResult] = []
    for tier in sorted({entity.tier for entity in selected}):
        tier_entities = [entity for entity in selected if entity.tier == tier]
        results.extend(await asyncio.gather(*(guarded(entity) for entity in tier_entities)))
    return results


def _log_report(report: SyncReport) -> None:
    totals = report.totals
    extra = {"event": "sync_finished", "kind": report.kind, "fetched": totals.received}
    if report.succeeded:
        logger.info(
            "%s sync finished in %.1f s: %d fetched, %d created, %d updated",
            report.kind,
            report.seconds,
            totals.received,
            totals.created,
            totals.updated,
            extra=extra,
        )
    else:
        names = ", ".join(r.entity for r in report.failed)
        logger.error("%s sync finished with failures in: %s", report.kind, names, extra=extra)


class EntitySync:
    """One entity's read and write within a sync run."""

    def __init__(
        self,
        entity: Entity,
        settings: Settings,
        database_url: str,
        client: ServiceTitanClient,
        run_id: uuid.UUID,
        requested: SyncKind,
        reporter: ProgressReporter,
    ) -> None:
        self.entity = entity
        self.settings = settings
        self.database_url = database_url
        self.client = client
        self.run_id = run_id
        self.requested = requested
        self.reporter = reporter
        self.counts = UpsertCounts()
        self.failures_logged = 0
        self.dropped = 0  # failed records whose raw JSON could not be kept either
        self.first_failure: RecordFailure | None = None

    async def run(self) -> EntityResult:
        """Sync the entity; return its result, whether it succeeded or failed."""
        started = time.monotonic()
        with log_context(entity=self.entity.name):
            try:
                conn = await async_connect(self.database_url, autocommit=True)
            except RulesdError as exc:
                return self._failed(self.requested, started, exc.message)
            try:
                return await self._run_on(conn, started)
            finally:
                await conn.close()

    async def _run_on(self, conn: psycopg.AsyncConnection[Any], started: float) -> EntityResult:
        await conn.execute("SET TIME ZONE 'UTC'")
        await create_staging_table(conn)
        plan = plan_read(
            self.entity, self.requested, await state.load_state(conn, self.entity.name), self.settings.sync.overlap
        )
        log_id = await self._begin(conn, plan)
        self.reporter.start(self.entity.name, plan.kind, await self._expected_total(conn, plan))
        try:
            end_cursor = await self._copy(conn, plan, log_id)
            missing = await self._complete(conn, plan, log_id, self.counts, end_cursor)
        except (RulesdError, psycopg.Error, ValueError) as exc:
            message = _describe(exc)
            await self._record_failure(conn, log_id, message)
            result = self._failed(plan.kind, started, message, self.counts, plan.resume)
            self.reporter.finish(result)
            return result

        counts = self.counts
        status = "failed" if counts.failed else "succeeded"
        result = EntityResult(
            entity=self.entity.name,
            kind=plan.kind,
            status=status,
            counts=counts,
            missing=missing,
            seconds=time.monotonic() - started,
            error=self._failure_summary(counts),
            resumed=plan.resume,
        )
        self.reporter.finish(result)
        return result

    async def _begin(self, conn: psycopg.AsyncConnection[Any], plan: ReadPlan) -> int:
        async with conn.transaction():
            if plan.kind in ("initial", "full") and not plan.resume:
                await state.begin_read(conn, self.entity.name, self.run_id, plan.kind)
            else:
                await state.mark_started(conn, self.entity.name, plan.kind)
            return await state.start_log(conn, self.run_id, self.entity.name, plan.kind)

    async def _expected_total(self, conn: psycopg.AsyncConnection[Any], plan: ReadPlan) -> int | None:
        # Export feeds report no total. A full read returns about as many rows
        # as the table holds, so a row estimate gives an ETA. reltuples is -1
        # until the table is first analyzed, and autovacuum may be off, so
        # the statistics' live row count is the fallback.
        if plan.kind != "full":
            return None
        cur = await conn.execute(
            "SELECT greatest(c.reltuples::bigint, s.n_live_tup) FROM pg_class AS c"
            " LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid WHERE c.oid = to_regclass(%s)",
            (self.entity.table,),
        )
        row = await cur.fetchone()
        return int(row[0]) if row and row[0] and row[0] > 0 else None

    async def _copy(self, conn: psycopg.AsyncConnection[Any], plan: ReadPlan, log_id: int) -> str | None:
        """Read every page and write it in batches into ``self.counts``; return the final cursor."""
        upserter = Upserter(self.entity, track_seen=plan.kind == "full")
        batch_size = max(1, self.settings.sync.batch_size)
        pending: list[RecordArray] = []
        pending_count = 0
        cursor = plan.cursor

        async with aclosing(self._read_ahead(plan)) as chunks:
            async for chunk in chunks:
                if chunk.total is not None:
                    self.reporter.set_total(self.entity.name, chunk.total)
                pending.append(chunk.records)
                pending_count += len(chunk.records)
                cursor = chunk.cursor
                if pending_count < batch_size:
                    continue
                batch = RecordArray.concat(pending)
                self.counts = self.counts + await self._write_batch(conn, upserter, plan, batch, cursor, log_id)
                pending, pending_count = [], 0
                self.reporter.advance(self.entity.name, self.counts)

        # The last page may be empty but still carries the cursor to keep.
        batch = RecordArray.concat(pending) if pending else RecordArray(None, None, [])
        self.counts = self.counts + await self._write_batch(conn, upserter, plan, batch, cursor, log_id)
        self.reporter.advance(self.entity.name, self.counts)
        return cursor

    async def _write_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        upserter: Upserter,
        plan: ReadPlan,
        records: RecordArray,
        cursor: str | None,
        log_id: int,
    ) -> UpsertCounts:
        # Triggers of other features write shared tables, so two entities'
        # batches can deadlock. The contact triggers' writes to suppressions
        # take an advisory lock first. In any other case Postgres rolls the
        # victim back whole, and the batch is simply written again.
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                async with conn.transaction():
                    counts, failures = await self._write_batch_once(conn, upserter, plan, records, cursor, log_id)
                break
            except RETRYABLE_ERRORS as exc:
                if attempt == BATCH_ATTEMPTS:
                    raise
                logger.warning(
                    "%s batch rolled back (%s); writing it again, attempt %d of %d",
                    self.entity.name,
                    _describe(exc),
                    attempt + 1,
                    BATCH_ATTEMPTS,
                    extra={"event": "sync_batch_retried", "entity": self.entity.name},
                )
                await asyncio.sleep(random.uniform(0.05, 0.25) * attempt)
        self._log_failures(failures)
        logger.debug(
            "%s batch: %d records, %d created, %d updated",
            self.entity.name,
            counts.received,
            counts.created,
            counts.updated,
            extra={"event": "sync_batch", "entity": self.entity.name, "cursor_saved": cursor is not None},
        )
        return counts

    async def _write_batch_once(
        self,
        conn: psycopg.AsyncConnection[Any],
        upserter: Upserter,
        plan: ReadPlan,
        records: RecordArray,
        cursor: str | None,
        log_id: int,
    ) -> tuple[UpsertCounts, list[RecordFailure]]:
        # An initial or full batch writes no events, and its checkpoint
        # commits with it, so a commit lost in a server crash is simply read
        # again and need not wait for the WAL flush. Incremental batches
        # write events and keep the server's synchronous_commit.
        if plan.kind != "incremental":
            await conn.execute(
                "SELECT set_config('rulesd.suppress_events', 'on', true), set_config('synchronous_commit', 'off', true)"
            )
        counts, failures = await upserter.write(conn, records)
        await self._save_cursor(conn, plan, cursor)
        await state.add_log_counts(conn, log_id, counts)
        return counts, failures

    async def _save_cursor(self, conn: psycopg.AsyncConnection[Any], plan: ReadPlan, cursor: str | None) -> None:
        if plan.kind == "incremental":
            # A list read's watermark moves only when the whole read is done,
            # because list pages are not ordered by modifiedOn.
            if self.entity.export_path is not None and cursor is not None:
                await state.save_incremental_cursor(conn, self.entity.name, cursor)
            return
        await state.save_run_cursor(conn, self.entity.name, cursor)

    async def _complete(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: ReadPlan,
        log_id: int,
        counts: UpsertCounts,
        end_cursor: str | None,
    ) -> int:
        async with conn.transaction():
            missing = await mark_missing(conn, self.entity) if plan.kind == "full" else 0
            watermark = await self._max_modified_on(conn)
            export_cursor = end_cursor if self.entity.export_path is not None else None
            await state.finish_read(conn, self.entity.name, continue_from=export_cursor, watermark=watermark)
            await state.finish_log(
                conn,
                log_id,
                status="failed" if counts.failed else "succeeded",
                error=self._failure_summary(counts),
                watermark=export_cursor or (watermark.isoformat() if watermark else None),
            )
        return missing

    async def _max_modified_on(self, conn: psycopg.AsyncConnection[Any]) -> datetime | None:
        cur = await conn.execute(sql.SQL("SELECT max(modified_on) FROM {}").format(sql.Identifier(self.entity.table)))
        row = await cur.fetchone()
        return row[0] if row else None

    async def _read_ahead(self, plan: ReadPlan) -> AsyncIterator[Chunk]:
        """Yield the plan's pages while the next ones are already being fetched."""
        queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue(maxsize=READ_AHEAD_PAGES)

        async def produce() -> None:
            try:
                async for chunk in self._read(plan):
                    await queue.put(chunk)
                await queue.put(None)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the consumer, which raises it
                await queue.put(exc)

        producer = asyncio.create_task(produce())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            producer.cancel()
            try:
                await producer
            except asyncio.CancelledError:
                pass

    async def _read(self, plan: ReadPlan) -> AsyncIterator[Chunk]:
        entity = self.entity
        if entity.export_path is not None:
            pages = self.client.iter_export(
                entity, continue_from=plan.cursor, include_recent_changes=plan.kind == "incremental"
            )
            async for page in pages:
                yield Chunk(page.array, page.continue_from)
            return

        list_pages = self.client.iter_list(entity, modified_on_or_after=plan.since)
        async for list_page in list_pages:
            yield Chunk(list_page.array, f"page {list_page.page}", list_page.total_count)

    def _log_failures(self, failures: list[RecordFailure]) -> None:
        for failure in failures:
            if self.first_failure is None:
                self.first_failure = failure
            if not failure.stored:
                self.dropped += 1
            if self.failures_logged >= MAX_LOGGED_FAILURES:
                continue
            self.failures_logged += 1
            outcome = "raw record kept" if failure.stored else "record not stored"
            logger.warning(
                "%s %s: typed columns not filled, %s: %s",
                self.entity.name,
                failure.record_id if failure.record_id is not None else "(no id)",
                outcome,
                failure.error,
                extra={"event": "sync_record_failed", "entity": self.entity.name, "entity_id": failure.record_id},
            )

    def _failure_summary(self, counts: UpsertCounts) -> str | None:
        if not counts.failed or self.first_failure is None:
            return None
        first = self.first_failure
        stored_raw = counts.failed - self.dropped
        if not self.dropped:
            outcome = "their raw JSON was kept"
        elif not stored_raw:
            outcome = "none of them could be stored"
        else:
            outcome = f"the raw JSON of {stored_raw} was kept and {self.dropped} could not be stored"
        return (
            f"{counts.failed} records had values that could not be stored in typed columns"
            f" (first: id {first.record_id}: {first.error}); {outcome}"
        )

    async def _record_failure(self, conn: psycopg.AsyncConnection[Any], log_id: int, message: str) -> None:
        try:
            async with conn.transaction():
                await state.finish_log(conn, log_id, status="failed", error=message)
        except psycopg.Error as exc:
            # The next run closes this log row as interrupted.
            logger.error(
                "could not record the failure of %s in st_sync_log: %s",
                self.entity.name,
                exc,
                extra={"event": "sync_log_write_failed", "entity": self.entity.name},
            )

    def _failed(
        self,
        kind: SyncKind,
        started: float,
        message: str,
        counts: UpsertCounts | None = None,
        resumed: bool = False,
    ) -> EntityResult:
        return EntityResult(
            entity=self.entity.name,
            kind=kind,
            status="failed",
            counts=counts or UpsertCounts(),
            seconds=time.monotonic() - started,
            error=message,
            resumed=resumed,
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError) and exc.hint:
        # The run's own hint is generic, so the entity's error carries what to check.
        return f"{exc.message}; {exc.hint}"
    if isinstance(exc, RulesdError):  # the client's messages name the URL themselves
        return exc.message
    if isinstance(exc, psycopg.Error):
        text = str(exc).strip()
        return f"database error: {text.splitlines()[0] if text else type(exc).__name__}"
    return str(exc) or type(exc).__name__
