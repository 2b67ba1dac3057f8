"""Sync progress: rich progress bars on a terminal, periodic log lines elsewhere, a summary table."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

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
    """Build the end-of-run table: one row per entity, then the totals."""
    table = Table(title=f"{report.kind} sync {report.run_id}", title_justify="left")
    table.add_column("entity")
    table.add_column("kind")
    for name in ("fetched", "created", "updated", "unchanged", "failed", "missing", "seconds"):
        table.add_column(name, justify="right")
    table.add_column("status")
    for result in report.results:
        counts = result.counts
        table.add_row(
            result.entity,
            result.kind + (" (resumed)" if result.resumed else ""),
            f"{counts.received:,}",
            f"{counts.created:,}",
            f"{counts.updated:,}",
            f"{counts.unchanged:,}",
            f"{counts.failed:,}",
            f"{result.missing:,}",
            f"{result.seconds:.1f}",
            result.status if result.status == "succeeded" else f"[red]{result.status}[/red]",
        )
    totals = report.totals
    table.add_row(
        "total",
        "",
        f"{totals.received:,}",
        f"{totals.created:,}",
        f"{totals.updated:,}",
        f"{totals.unchanged:,}",
        f"{totals.failed:,}",
        f"{sum(r.missing for r in report.results):,}",
        f"{report.seconds:.1f}",
        "succeeded" if report.succeeded else "[red]failed[/red]",
        style="bold",
    )
    return table
