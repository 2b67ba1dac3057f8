"""The outcome of a sync run: one result per entity, and the run's summary."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rulesd.sync.upsert import UpsertCounts

EntityStatus = Literal["succeeded", "failed"]


@dataclass(frozen=True)
class EntityResult:
    """The outcome of one entity's sync. ``kind`` is the read actually run, which can differ from the request.

    A plain ``rulesd sync`` runs an initial read for an entity never synced,
    and finishes an interrupted initial or full read before anything else.
    ``missing`` counts rows a completed full read marked as no longer
    returned by ServiceTitan.
    """

    entity: str
    kind: str
    status: EntityStatus
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    missing: int = 0
    seconds: float = 0.0
    error: str | None = None
    resumed: bool = False

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        counts = document.pop("counts")
        document["fetched"] = counts.pop("received")
        document.update(counts)
        document["seconds"] = round(self.seconds, 3)
        return document


@dataclass(frozen=True)
class SyncReport:
    """Every entity's result in one run, in sync order."""

    run_id: uuid.UUID
    kind: str
    results: tuple[EntityResult, ...]
    seconds: float

    @property
    def failed(self) -> tuple[EntityResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def succeeded(self) -> bool:
        return not self.failed

    @property
    def totals(self) -> UpsertCounts:
        total = UpsertCounts()
        for result in self.results:
            total = total + result.counts
        return total

    def as_dict(self) -> dict[str, Any]:
        totals = self.totals
        return {
            "run_id": str(self.run_id),
            "kind": self.kind,
            "status": "succeeded" if self.succeeded else "failed",
            "seconds": round(self.seconds, 3),
            "fetched": totals.received,
            "created": totals.created,
            "updated": totals.updated,
            "unchanged": totals.unchanged,
            "failed": totals.failed,
            "entities": [r.as_dict() for r in self.results],
        }
