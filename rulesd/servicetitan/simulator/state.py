"""Compact per-entity state of the simulated tenant.

A medium tenant contains about a million records. Only what changes or what
links records is kept, in ``array`` columns of a few bytes per record;
everything else is generated again from (seed, entity, index) whenever a
record is served.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field
from typing import Any

# Epoch microseconds are the simulator's clock unit.
MICROS = 1_000_000


@dataclass
class Table:
    """The compact state of one entity's records, indexed 0..count-1.

    ``order_index``/``order_modified`` form an append-only log of
    (record, modifiedOn) sorted by (modifiedOn, id): the export feed. A
    change appends the record again with its new ``modifiedOn``; the older
    entry is stale and skipped, because it no longer matches ``modified``.
    """

    name: str
    code: int
    base_id: int
    parent: array = field(default_factory=lambda: array("q"))
    created: array = field(default_factory=lambda: array("q"))
    modified: array = field(default_factory=lambda: array("q"))
    status: array = field(default_factory=lambda: array("b"))
    active: array = field(default_factory=lambda: array("b"))
    order_index: array = field(default_factory=lambda: array("q"))
    order_modified: array = field(default_factory=lambda: array("q"))
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    children: dict[str, "Children"] = field(default_factory=dict)
    version: int = 0

    @property
    def count(self) -> int:
        return len(self.modified)

    def record_id(self, index: int) -> int:
        return self.base_id + index + 1

    def index_of(self, record_id: int) -> int | None:
        index = record_id - self.base_id - 1
        if 0 <= index < self.count:
            return index
        return None

    def append(self, *, parent: int, created: int, status: int = 0, active: bool = True) -> int:
        """Add a record (its log entry comes from ``build_order`` or ``touch``); return its index."""
        self.parent.append(parent)
        self.created.append(created)
        self.modified.append(created)
        self.status.append(status)
        self.active.append(1 if active else 0)
        return self.count - 1

    def build_order(self) -> None:
        """Sort every record into the export log by (modifiedOn, id)."""
        modified = self.modified
        ordered = sorted(range(self.count), key=modified.__getitem__)
        self.order_index = array("q", ordered)
        self.order_modified = array("q", (modified[i] for i in ordered))

    def touch(self, index: int, when: int) -> None:
        """Move a record's ``modifiedOn`` to ``when``, which must be later than every log entry."""
        self.modified[index] = when
        self.order_index.append(index)
        self.order_modified.append(when)
        self.version += 1

    def override(self, index: int, **values: Any) -> None:
        self.overrides.setdefault(index, {}).update(values)

    def log_position_after(self, modified: int, record_id: int) -> int:
        """Return the first log position whose (modifiedOn, id) is after the given pair."""
        position = bisect.bisect_left(self.order_modified, modified)
        while (
            position < len(self.order_modified)
            and self.order_modified[position] == modified
            and self.record_id(self.order_index[position]) <= record_id
        ):
            position += 1
        return position

    def is_current(self, position: int) -> bool:
        return self.modified[self.order_index[position]] == self.order_modified[position]


@dataclass
class Children:
    """The child indexes of each parent: contiguous for generated records, listed for new ones."""

    start: array = field(default_factory=lambda: array("q", [0]))
    added: dict[int, list[int]] = field(default_factory=dict)

    def close_parent(self, next_child: int) -> None:
        """Mark where the generated children of the next parent begin."""
        self.start.append(next_child)

    def add(self, parent: int, child: int) -> None:
        self.added.setdefault(parent, []).append(child)

    def of(self, parent: int) -> list[int]:
        """Return the child indexes of ``parent``: generated ones first, then those added later."""
        start = self.start
        generated = list(range(start[parent], start[parent + 1])) if parent + 1 < len(start) else []
        added = self.added.get(parent)
        return generated + added if added else generated
