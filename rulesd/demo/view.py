"""The demo's screen: a rich Live view on a terminal, one plain line per event otherwise."""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rulesd.demo.feed import FeedItem, Totals, local_time, money
from rulesd.sync.report import SyncReport

logger = logging.getLogger(__name__)

SHOWN_EVENTS = 18  # lines of the Live view's workflow event list
SHOWN_CHANGES = 5  # lines of the Live view's list of synced changes
ACTION_CHARACTERS = 300  # characters of a step's action or a draft shown on one line
STYLES = {
    "story": "bold magenta",
    "sync": "cyan",
    "enrolled": "green",
    "step": "bold green",
    "deferred": "yellow",
    "stopped": "bold red",
    "finished": "blue",
    "drafted": "white",
    "warning": "bold yellow",
}


@dataclass(frozen=True)
class Line:
    """One event on screen: demo time, a category and the text."""

    at: str
    category: str
    text: str


class Screen(Protocol):
    def start(self, banner: str) -> None: ...

    def show(self, line: Line) -> None: ...

    def update(self, now: datetime, totals: Totals, changes: int) -> None: ...

    def stop(self) -> None: ...


def describe(item: FeedItem, zone: ZoneInfo, show_actions: bool) -> list[tuple[str, str]]:
    """Turn a feed item into (category, text) lines for the screen."""
    row: dict[str, Any] = item.row
    record = f"{row['entity']} {row['entity_id']}" if "entity" in row else f"enrollment {row['instance_id']}"
    if item.kind == "enrolled":
        customer = f" for {row['customer_name']}" if row["customer_name"] else ""
        amount = f" ({money(row['estimate_total'])})" if row["estimate_total"] is not None else ""
        enrolled = f"{record}{amount}{customer} enrolled in {row['rule_id']}"
        if row["next_run_at"] is None:
            return [("enrolled", enrolled)]
        due = local_time(row["next_run_at"], zone)
        return [("enrolled", f"{enrolled}; step {row['current_step']} due {due}")]
    if item.kind == "step":
        return _describe_step(row, record, zone, show_actions)
    if item.kind == "finished":
        reason = row["stop_reason"] or row["error"] or ""
        category = "stopped" if row["status"] == "stopped" else "finished"
        return [(category, f"{record} {row['status']} in {row['rule_id']}" + (f": {reason}" if reason else ""))]
    subject = f" subject {row['subject']!r}" if row["subject"] else ""
    body = _shorten(row["body"] or "")
    return [("drafted", f"{row['channel']} to {row['recipient']} ({row['status']}, not sent){subject}: {body}")]


def _describe_step(row: dict[str, Any], record: str, zone: ZoneInfo, show_actions: bool) -> list[tuple[str, str]]:
    status = row["status"]
    if status == "deferred":
        until = local_time(row["defer_until"], zone)
        return [("deferred", f"step {row['step']} of {record} deferred to {until}: {row['detail']}")]
    if status == "done":
        lines = [("step", f"step {row['step']} of {record} ran ({row['rule_id']})")]
        if show_actions and row["action"]:
            lines.append(("step", f"  action for the model: {_shorten(row['action'])}"))
        return lines
    detail = f": {row['detail']}" if row["detail"] else ""
    return [("finished", f"step {row['step']} of {record} {status}{detail}")]


def describe_sync(report: SyncReport) -> str | None:
    """Summarize the changes one incremental sync brought in, or None when there were none."""
    parts = []
    for result in report.results:
        counts = result.counts
        if counts.created or counts.updated:
            pieces = [f"{counts.created} new"] if counts.created else []
            pieces += [f"{counts.updated} updated"] if counts.updated else []
            parts.append(f"{result.entity} {', '.join(pieces)}")
    if not parts:
        return None
    return "changes from ServiceTitan: " + "; ".join(parts)


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= ACTION_CHARACTERS else flat[: ACTION_CHARACTERS - 1] + "…"


def header_text(now: datetime, zone: ZoneInfo, speed: float, totals: Totals, changes: int) -> str:
    """Return the status line: demo time and the running totals."""
    return (
        f"demo time {now.astimezone(zone):%a %H:%M} {zone.key} ({speed:,.0f}x real time) | "
        f"changes synced {changes} | enrolled {totals.enrolled} | steps run {totals.steps_run} | "
        f"deferred {totals.deferred} | stopped {totals.stopped} | drafts {totals.drafted}"
    )


class LiveScreen:
    """A rich Live view: the banner, the totals and the latest events, redrawn in place."""

    def __init__(self, zone: ZoneInfo, speed: float, console: Console | None = None) -> None:
        self.zone = zone
        self.speed = speed
        self.console = console or Console()
        # Synced changes arrive every few seconds, so they get their own
        # short list and never push enrollments and stops off the screen.
        self._changes: deque[Line] = deque(maxlen=SHOWN_CHANGES)
        self._events: deque[Line] = deque(maxlen=SHOWN_EVENTS)
        self._banner = ""
        self._header = ""
        self._live = Live(console=self.console, refresh_per_second=4, transient=False)

    def start(self, banner: str) -> None:
        self._banner = banner
        self._live.start()
        self._refresh()

    def show(self, line: Line) -> None:
        (self._changes if line.category == "sync" else self._events).append(line)
        self._refresh()

    def update(self, now: datetime, totals: Totals, changes: int) -> None:
        self._header = header_text(now, self.zone, self.speed, totals, changes)
        self._refresh()

    def stop(self) -> None:
        self._live.stop()

    def _refresh(self) -> None:
        self._live.update(
            Group(
                Panel(Text(self._banner), title="rulesd demo", border_style="magenta"),
                Text(self._header, style="bold"),
                Panel(_grid(self._changes), title="changes from the sync", border_style="cyan"),
                Panel(_grid(self._events), title="enrollments, steps, stops and drafts", border_style="green"),
            )
        )


def _grid(lines: deque[Line]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for line in lines:
        grid.add_row(line.at, Text(line.category, style=STYLES.get(line.category, "")), Text(line.text))
    return grid


class PlainScreen:
    """One line per event on standard output, for pipes, logs and tests."""

    def __init__(self, zone: ZoneInfo, speed: float) -> None:
        self.zone = zone
        self.speed = speed

    def start(self, banner: str) -> None:
        print(banner, flush=True)

    def show(self, line: Line) -> None:
        print(f"{line.at}  {line.category:<9} {line.text}", flush=True)

    def update(self, now: datetime, totals: Totals, changes: int) -> None:
        return None

    def stop(self) -> None:
        return None


def make_screen(zone: ZoneInfo, speed: float) -> Screen:
    """Choose the Live view on a terminal and plain lines otherwise."""
    if sys.stdout.isatty():
        return LiveScreen(zone, speed)
    return PlainScreen(zone, speed)
