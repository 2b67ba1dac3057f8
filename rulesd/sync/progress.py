"""Sync progress: rich progress bars on a terminal, periodic log lines elsewhere, a summary table."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from rulesd.logs import log_through_console
from rulesd.sync.report import EntityResult, SyncReport
from rulesd.sync.upsert import UpsertCounts

logger = logging.getLogger(__name__)

LOG_INTERVAL = 10.0  # seconds between progress log lines for one entity


class ProgressReporter(Protocol):
    """Receives progress from the orchestrator; ``counts`` are cumulative for the entity."""

    def start(self, entity: str, kind: str, total: int | None) -> None: ...

    def set_total(self, entity: str, total: int | None) -> None: ...

    def advance(self, entity: str, counts: UpsertCounts) -> None: ...

    def finish(self, result: EntityResult) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Reports nothing."""

    def start(self, entity: str, kind: str, total: int | None) -> None:
        return None

    def set_total(self, entity: str, total: int | None) -> None:
        return None

    def advance(self, entity: str, counts: UpsertCounts) -> None:
        return None

    def finish(self, result: EntityResult) -> None:
        return None

    def close(self) -> None:
        return None


class LogProgress:
    """Logs each entity's progress at most every ``interval`` seconds, and its outcome."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._started: dict[str, float] = {}
        self._last_logged: dict[str, float] = {}
        self._totals: dict[str, int | None] = {}

    def start(self, entity: str, kind: str, total: int | None) -> None:
        now = time.monotonic()
        self._started[entity] = now
        self._last_logged[entity] = now
        self._totals[entity] = total
        logger.info("%s sync of %s started", kind, entity, extra={"event": "sync_entity_started", "entity": entity})

    def set_total(self, entity: str, total: int | None) -> None:
        self._totals[entity] = total

    def advance(self, entity: str, counts: UpsertCounts) -> None:
        now = time.monotonic()
        if now - self._last_logged.get(entity, 0.0) < self.interval:
            return
        self._last_logged[entity] = now
        elapsed = max(now - self._started.get(entity, now), 1e-9)
        total = self._totals.get(entity)
        of_total = f" of {total}" if total else ""
        logger.info(
            "%s: %d%s records fetched, %d created, %d updated (%.0f records/s)",
            entity,
            counts.received,
            of_total,
            counts.created,
            counts.updated,
            counts.received / elapsed,
            extra={"event": "sync_progress", "entity": entity, "fetched": counts.received},
        )

    def finish(self, result: EntityResult) -> None:
        log_result(result)

    def close(self) -> None:
        return None


class RichProgress:
    """One progress bar per entity: records, rate, and an ETA where the total is known.

    While the bars show, rulesd's log records print through the same console,
    above the bars, so a log line does not break the display.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description:<24}"),
            BarColumn(),
            TextColumn("{task.completed:>10,.0f}{task.fields[of_total]}"),
            TextColumn("{task.fields[rate]:>9} rec/s"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._logging = contextlib.ExitStack()
        self._progress.start()
        self._logging.enter_context(log_through_console(self.console))

    def start(self, entity: str, kind: str, total: int | None) -> None:
        self._started[entity] = time.monotonic()
        self._tasks[entity] = self._progress.add_task(
            f"{entity} ({kind})", total=total, of_total=_of_total(total), rate="-"
        )

    def set_total(self, entity: str, total: int | None) -> None:
        self._progress.update(self._tasks[entity], total=total, of_total=_of_total(total))

    def advance(self, entity: str, counts: UpsertCounts) -> None:
        elapsed = max(time.monotonic() - self._started[entity], 1e-9)
        self._progress.update(
            self._tasks[entity], completed=counts.received, rate=f"{counts.received / elapsed:,.0f}"
        )

    def finish(self, result: EntityResult) -> None:
        task = self._tasks[result.entity]
        mark = "ok" if result.status == "succeeded" else "FAILED"
        self._progress.update(
            task,
            total=result.counts.received,
            completed=result.counts.received,
            description=f"{result.entity} ({result.kind}) {mark}",
        )
        if result.status == "failed":
            log_result(result)

    def close(self) -> None:
        self._progress.stop()
        self._logging.close()


def _of_total(total: int | None) -> str:
    return f" / {total:,}" if total else ""


def log_result(result: EntityResult) -> None:
    """Log one entity's outcome: INFO when it succeeded, ERROR with the reason when it failed."""
    counts = result.counts
    extra: dict[str, Any] = {"event": "sync_entity_finished", "entity": result.entity, "status": result.status}
    if result.status == "succeeded":
        logger.info(
            "%s sync of %s succeeded: %d fetched, %d created, %d updated, %d unchanged in %.1f s",
            result.kind,
            result.entity,
            counts.received,
            counts.created,
            counts.updated,
            counts.unchanged,
            result.seconds,
            extra=extra,
        )
    else:
        logger.error("%s sync of %s failed: %s", result.kind, result.entity, result.error, extra=extra)


def make_progress(*, terminal: bool, quiet: bool = False) -> ProgressReporter:
    """Choose progress bars for a terminal, log lines otherwise, or nothing when ``quiet``."""
    if quiet:
        return NullProgress()
    if terminal:
        return RichProgress()
    return LogProgress()


def summary_table(report: SyncReport) -> Table:
    """Build the end-of-run table: one row per entity, and the totals as its footer.

    The read kind shared by every row goes in the title, and a row notes
    after its entity name only how it differs: another kind, resumed,
    failed, failed records. The missing column appears only when a full
    read ran, because no other read marks rows missing.

    NOTE: the table fits 80 columns while the fetched and unchanged totals
    stay under ten million and, with a missing column, the created, updated
    and missing totals under a million. Past that, rich cuts the rightmost
    column on an 80-column terminal.
    """
    kinds = {result.kind for result in report.results}
    shared_kind = kinds.pop() if len(kinds) == 1 else report.kind
    totals = report.totals
    title = _summary_title(report, shared_kind)
    table = Table(
        title=title,
        title_justify="left",
        min_width=len(title),  # a title wider than the columns would wrap
        box=box.SIMPLE,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        show_footer=True,
        footer_style="bold",
    )
    # Entity names are single words, so wrapping only moves a row's notes to their own line.
    longest_name = max((len(result.entity) for result in report.results), default=0)
    table.add_column("entity", footer="total", min_width=longest_name)

    columns: list[tuple[str, Callable[[EntityResult], str], str]] = [
        ("fetched", lambda r: f"{r.counts.received:,}", f"{totals.received:,}"),
        ("created", lambda r: f"{r.counts.created:,}", f"{totals.created:,}"),
        ("updated", lambda r: f"{r.counts.updated:,}", f"{totals.updated:,}"),
        ("unchanged", lambda r: f"{r.counts.unchanged:,}", f"{totals.unchanged:,}"),
    ]
    if "full" in {result.kind for result in report.results}:
        missing = sum(result.missing for result in report.results)
        columns.append(("missing", lambda r: f"{r.missing:,}", f"{missing:,}"))
    columns.append(("seconds", lambda r: f"{r.seconds:.1f}", f"{report.seconds:.1f}"))
    for header, _, footer in columns:
        table.add_column(header, footer=footer, justify="right", no_wrap=True)

    for result in report.results:
        cells = [_entity_cell(result, shared_kind)] + [cell(result) for _, cell, _ in columns]
        table.add_row(*cells, style=None if result.status == "succeeded" else "red")
    return table


def _summary_title(report: SyncReport, shared_kind: str) -> str:
    title = f"{report.kind} sync {report.run_id}"
    if shared_kind != report.kind:
        title += f" ({shared_kind} reads)"
    if report.succeeded:
        return f"{title} succeeded"
    return f"{title}: {len(report.failed)} of {len(report.results)} entities failed"


def _entity_cell(result: EntityResult, shared_kind: str) -> Text:
    notes = []
    if result.kind != shared_kind:
        notes.append(result.kind)
    if result.resumed:
        notes.append("resumed")
    if result.status != "succeeded":
        notes.append(result.status)
    if result.counts.failed:
        notes.append(f"{result.counts.failed:,} failed records")
    cell = Text(result.entity)
    if notes:
        cell.append(f" ({', '.join(notes)})")
    return cell
