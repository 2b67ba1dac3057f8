"""The scripted story: estimates over $500 are created in the simulator, and one of them is sold.

The story makes sure that a short demo shows a whole sequence, whatever
the random activity does. It shows an enrollment, its first step after
the two-day delay, a step deferred to business hours, and a stop when
the estimate is sold before its next step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import anyio
import psycopg

from rulesd.demo.activity import DemoActivity
from rulesd.engine.clock import Clock
from rulesd.servicetitan.simulator import Simulator

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # real seconds between looks at the clock and the database
FIRST_ESTIMATE_AFTER = timedelta(minutes=30)  # demo time after the start
# Created at this local time on the first day, the second estimate's step
# falls due after business hours two days later and is deferred.
SECOND_ESTIMATE_AT = time(17, 40)
SELL_AFTER_STEP = timedelta(hours=3)  # demo time between the first step and the sale
MAX_CUSTOMER_TRIES = 5  # generated customers are "do not service" about 1 time in 100

Announce = Callable[[str], None]


@dataclass(frozen=True)
class StoryEstimate:
    """One estimate the story creates: who it is for and what it covers."""

    customer: str
    name: str
    subtotal: float


SOLD = StoryEstimate("Dana Whitfield", "Furnace replacement", 1850.00)
DEFERRED = StoryEstimate("Marcus Bell", "Tankless water heater install", 980.00)


class Story:
    """Drive the story from the demo clock; ``run`` returns once the first estimate is sold."""

    def __init__(
        self,
        sim: Simulator,
        activity: DemoActivity,
        clock: Clock,
        database_url: str,
        zone: str,
        announce: Announce,
    ) -> None:
        self.sim = sim
        self.activity = activity
        self.clock = clock
        self.database_url = database_url
        self.zone = ZoneInfo(zone)
        self.announce = announce
        self.sold_id: int | None = None

    async def run(self) -> None:
        start = self.clock.now()
        await self._until(start + FIRST_ESTIMATE_AFTER)
        self.sold_id = self._create(SOLD)

        local_start = start.astimezone(self.zone)
        await self._until(datetime.combine(local_start.date(), SECOND_ESTIMATE_AT, tzinfo=self.zone))
        self._create(DEFERRED)

        step_done_at = await self._first_step_done(self.sold_id)
        await self._until(step_done_at + SELL_AFTER_STEP)
        try:
            self.sim.apply("sell_estimate", id=self.sold_id)
        except (ValueError, LookupError) as exc:
            self.announce(f"the story could not sell estimate {self.sold_id}: {exc}")
            return
        self.announce(
            f"{SOLD.customer} accepts estimate {self.sold_id} ({SOLD.name}): it is marked Sold in ServiceTitan"
        )

    def _create(self, story: StoryEstimate) -> int:
        # A "do not service" customer would stop the enrollment at once, so the story picks another.
        for _ in range(MAX_CUSTOMER_TRIES):
            customer = self.sim.apply("create_customer", name=story.customer)
            if not customer.get("doNotService"):
                break
        with self.sim.lock:
            estimate = self.sim.apply(
                "create_estimate", customer_id=customer["id"], subtotal=story.subtotal, name=story.name
            )
            self.activity.protect(int(estimate["id"]))
        self.announce(
            f"{story.customer} asks for a quote: estimate {estimate['id']} ({story.name}, "
            f"${story.subtotal:,.2f} before tax) is created in ServiceTitan"
        )
        return int(estimate["id"])

    async def _until(self, when: datetime) -> None:
        while self.clock.now() < when:
            await anyio.sleep(POLL_INTERVAL)

    async def _first_step_done(self, estimate_id: int) -> datetime:
        while True:
            finished = await anyio.to_thread.run_sync(self._step_done_at, estimate_id)
            if finished is not None:
                return finished
            await anyio.sleep(POLL_INTERVAL)

    def _step_done_at(self, estimate_id: int) -> datetime | None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute(
                """
                SELECT r.finished_at
                  FROM workflow_step_runs r
                  JOIN workflow_instances i ON i.id = r.instance_id
                 WHERE i.entity = 'estimate' AND i.entity_id = %s AND r.status = 'done'
                 ORDER BY r.id
                 LIMIT 1
                """,
                (estimate_id,),
            ).fetchone()
        return row[0] if row else None
