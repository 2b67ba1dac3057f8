"""Rule scenarios (``*.test.yaml``): starting rows, a timeline of changes, and the expected engine actions.

A scenario runs on the real trigger and execution engines against a real
Postgres database, with a fake clock. The runner applies each change at
its time and, between changes, jumps the clock to each due step in turn,
so days pass in milliseconds. What the engines did is then read back from
the database and compared with ``expect``.

File format (every time is an offset from ``start`` such as ``2d3h``, or
an ISO 8601 timestamp with a zone)::

    rules: [estimate-follow-up.yaml]     # default: X.yaml beside X.test.yaml
    scenarios:
      - name: sold estimate stops before the e-mail
        start: 2025-02-03T09:00:00-06:00
        rows:                            # loaded without change events
          customer: [{id: 7, name: Pat Doe}]
        timeline:
          - at: 0s
            create: {estimate: {id: 123, customer_id: 7, status: Open, subtotal: 800}}
          - at: 3d
            update: {estimate: {id: 123, status: Sold}}
        until: 10d                       # run the clock this far (default: 30d)
        expect:
          - {at: 0s, enrolled: estimate:123}
          - {at: 2d, step: text, entity: estimate:123, outcome: done}
          - {at: 3d, stopped: estimate:123, reason: Sold}

Expectation kinds: ``enrolled``, ``step`` (with ``outcome``, default
``done``; also ``skipped``, ``deferred``, ``transient`` and ``failed``),
``stopped``, ``completed``, ``failed`` and ``cancelled``. Each may name ``rule``; ``at`` is optional
and matches to the second. Everything the engines did that no expectation
matches is reported as unexpected, unless the scenario sets
``exhaustive: false``.

Steps run on the recording executor, which returns ``done``. A scenario's
``executor`` maps a step name to the outcomes its calls return in order
(``done``, ``skipped``, ``failed``, ``transient`` or ``deferred 2h``), then
``done`` again: ``executor: {text: [transient, done]}``.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from rulesd.config import EngineSettings
from rulesd.durations import format_duration, parse_duration
from rulesd.engine.clock import FakeClock
from rulesd.engine.execution import ExecutionEngine
from rulesd.engine.executor import RecordingExecutor, StepExecutor, StepRequest, StepResult
from rulesd.engine.ruleset import RuleSet, load_rule_set
from rulesd.engine.triggers import TriggerEngine
from rulesd.errors import RuleError
from rulesd.servicetitan.catalog import get_entity

logger = logging.getLogger(__name__)

DEFAULT_UNTIL = timedelta(days=30)
DEFAULT_START = datetime(2025, 2, 3, 15, 0, tzinfo=timezone.utc)  # a Monday, 09:00 in Chicago (CST)
MAX_ROUNDS = 100_000  # guards against a rule that reschedules itself forever
EXPECTATION_KINDS = ("enrolled", "step", "stopped", "completed", "failed", "cancelled")
ENGINE_TABLES = ("workflow_step_runs", "workflow_instances", "workflow_events", "workflow_rule_state", "workflow_definitions")


class ScenarioError(RuleError):
    """Raised when a scenario file cannot be read: invalid YAML, unknown keys or values."""


@dataclass(frozen=True)
class Change:
    at: datetime
    action: str  # create, update or delete
    entity: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Expectation:
    kind: str
    entity: str
    entity_id: int
    at: datetime | None = None
    rule: str | None = None
    step: str | None = None
    outcome: str | None = None
    reason: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Observation:
    kind: str
    entity: str
    entity_id: int
    at: datetime
    rule: str
    step: str | None = None
    outcome: str | None = None
    reason: str = ""

    def describe(self, start: datetime) -> str:
        text = f"{self.kind} {self.entity}:{self.entity_id} ({self.rule})"
        if self.step:
            text += f" step {self.step} {self.outcome}"
        text += f" at {_offset(self.at, start)}"
        if self.reason:
            text += f": {self.reason}"
        return text


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    rule_paths: tuple[Path, ...]
    start: datetime
    until: datetime
    rows: dict[str, list[dict[str, Any]]]
    timeline: tuple[Change, ...]
    expect: tuple[Expectation, ...]
    exhaustive: bool = True
    timezone: str = "America/Chicago"
    executor: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class ScenarioResult:
    scenario: Scenario
    failures: list[str] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# --- reading scenario files -------------------------------------------------------------------------


def find_scenario_files(paths: list[Path]) -> list[Path]:
    """Expand directories into their ``*.test.yaml`` files, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.test.y*ml") if p.name.endswith((".test.yaml", ".test.yml"))))
        else:
            found.append(path)
    return found


def load_scenarios(path: Path) -> list[Scenario]:
    """Read every scenario of ``path``; raise ``ScenarioError`` naming the file and the key."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read the scenario file: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("scenarios"), list):
        raise ScenarioError(f"{path}: expected a mapping with a 'scenarios' list", hint="see docs/engine.md for the format")
    default_rule = path.with_name(path.name.replace(".test.yaml", ".yaml").replace(".test.yml", ".yml"))
    rules = document.get("rules") or [default_rule.name]
    rule_paths = tuple((path.parent / str(rule)).resolve() for rule in rules)
    for rule_path in rule_paths:
        if not rule_path.exists():
            raise ScenarioError(f"{path}: rules: {rule_path} not found", hint="list rule files relative to the scenario file")
    return [_parse_scenario(path, rule_paths, index, item) for index, item in enumerate(document["scenarios"])]


def _parse_scenario(path: Path, rule_paths: tuple[Path, ...], index: int, item: Any) -> Scenario:
    where = f"{path}: scenarios[{index}]"
    if not isinstance(item, dict):
        raise ScenarioError(f"{where}: expected a mapping")
    unknown = set(item) - {"name", "start", "rows", "timeline", "expect", "until", "exhaustive", "timezone", "executor"}
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")

    start = _absolute(item.get("start"), DEFAULT_START, f"{where}.start") if "start" in item else DEFAULT_START
    name = str(item.get("name") or f"scenario {index + 1}")

    rows = item.get("rows") or {}
    if not isinstance(rows, dict):
        raise ScenarioError(f"{where}.rows: expected a mapping of entity name to a list of rows")
    for entity, entity_rows in rows.items():
        _check_entity(entity, f"{where}.rows")
        if not isinstance(entity_rows, list) or not all(isinstance(row, dict) and "id" in row for row in entity_rows):
            raise ScenarioError(f"{where}.rows.{entity}: expected a list of rows, each with an id")

    timeline = tuple(
        _parse_change(entry, start, f"{where}.timeline[{number}]") for number, entry in enumerate(item.get("timeline") or [])
    )
    expect = tuple(
        _parse_expectation(entry, start, f"{where}.expect[{number}]") for number, entry in enumerate(item.get("expect") or [])
    )
    until = _time(item.get("until"), start, f"{where}.until") if "until" in item else start + DEFAULT_UNTIL

    return Scenario(
        name=name,
        path=path,
        rule_paths=rule_paths,
        start=start,
        until=until,
        rows=rows,
        timeline=tuple(sorted(timeline, key=lambda change: change.at)),
        expect=expect,
        exhaustive=bool(item.get("exhaustive", True)),
        timezone=str(item.get("timezone") or "America/Chicago"),
        executor=_parse_executor(item.get("executor"), f"{where}.executor"),
    )


def _parse_executor(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(outcomes, list) for outcomes in value.values()):
        raise ScenarioError(f"{where}: expected a mapping of step name to a list of outcomes")
    script = {str(step): tuple(str(outcome) for outcome in outcomes) for step, outcomes in value.items()}
    for step, outcomes in script.items():
        for outcome in outcomes:
            try:
                _scripted_result(outcome, datetime.now(timezone.utc))
            except ValueError as exc:
                raise ScenarioError(f"{where}.{step}: {exc}") from None
    return script


def _scripted_result(outcome: str, now: datetime) -> StepResult:
    name, _, delay = outcome.partition(" ")
    if name == "deferred":
        return StepResult(outcome="deferred", detail="deferred by the scenario", defer_until=now + parse_duration(delay or "1h"))
    if name not in ("done", "skipped", "failed", "transient") or delay:
        raise ValueError(f"invalid outcome {outcome!r}; use done, skipped, failed, transient or deferred DURATION")
    return StepResult(outcome=name, detail=f"{name} by the scenario")  # type: ignore[arg-type]


class ScriptedExecutor:
    """An executor that returns a scenario's scripted outcomes per step name, then ``done``."""

    def __init__(self, script: dict[str, tuple[str, ...]]) -> None:
        self._remaining = {step: list(outcomes) for step, outcomes in script.items()}

    async def execute(self, request: StepRequest) -> StepResult:
        remaining = self._remaining.get(request.step.name)
        if remaining:
            return _scripted_result(remaining.pop(0), request.context.now)
        return StepResult(outcome="done", detail="recorded", transcript=[{"type": "action", "text": request.action}])


def _parse_change(entry: Any, start: datetime, where: str) -> Change:
    if not isinstance(entry, dict) or "at" not in entry:
        raise ScenarioError(f"{where}: expected a mapping with 'at' and one of create, update, delete")
    actions = [key for key in ("create", "update", "delete") if key in entry]
    if len(actions) != 1:
        raise ScenarioError(f"{where}: expected exactly one of create, update, delete")
    action = actions[0]
    body = entry[action]
    if not isinstance(body, dict) or len(body) != 1:
        raise ScenarioError(f"{where}.{action}: expected one entity, such as {{estimate: {{id: 1, status: Open}}}}")
    entity, values = next(iter(body.items()))
    _check_entity(entity, f"{where}.{action}")
    if action == "delete" and isinstance(values, int):
        values = {"id": values}
    if not isinstance(values, dict) or "id" not in values:
        raise ScenarioError(f"{where}.{action}.{entity}: expected a mapping with an id")
    return Change(at=_time(entry["at"], start, f"{where}.at"), action=action, entity=entity, values=values)


def _parse_expectation(entry: Any, start: datetime, where: str) -> Expectation:
    if not isinstance(entry, dict):
        raise ScenarioError(f"{where}: expected a mapping")
    kinds = [kind for kind in EXPECTATION_KINDS if kind in entry]
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: expected exactly one of {', '.join(EXPECTATION_KINDS)}")
    kind = kinds[0]
    record = entry.get("entity") if kind == "step" else entry[kind]
    if record is None:
        raise ScenarioError(f"{where}: a step expectation needs entity: ENTITY:ID")
    entity, entity_id = _parse_record(str(record), where)
    return Expectation(
        kind=kind,
        entity=entity,
        entity_id=entity_id,
        at=_time(entry["at"], start, f"{where}.at") if "at" in entry else None,
        rule=entry.get("rule"),
        step=str(entry["step"]) if kind == "step" else None,
        outcome=str(entry.get("outcome", "done")) if kind == "step" else None,
        reason=entry.get("reason"),
        source=json.dumps(entry, default=str),
    )


def _parse_record(text: str, where: str) -> tuple[str, int]:
    entity, _, raw_id = text.partition(":")
    if not raw_id.isdigit():
        raise ScenarioError(f"{where}: expected ENTITY:ID such as estimate:123, got {text!r}")
    _check_entity(entity, where)
    return entity, int(raw_id)


def _check_entity(entity: str, where: str) -> None:
    try:
        get_entity(entity)
    except KeyError as exc:
        raise ScenarioError(f"{where}: {exc.args[0]}") from None


def _time(value: Any, start: datetime, where: str) -> datetime:
    if isinstance(value, datetime):
        return _absolute(value, start, where)
    text = str(value)
    if "T" in text or text.count("-") >= 2:
        return _absolute(text, start, where)
    try:
        return start + parse_duration(value)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _absolute(value: Any, default: datetime, where: str) -> datetime:
    if value is None:
        return default
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise ScenarioError(f"{where}: invalid time {value!r}; use an ISO 8601 time with a zone") from None
    if moment.tzinfo is None:
        raise ScenarioError(f"{where}: time {value!r} has no zone; add one such as Z or -06:00")
    return moment.astimezone(timezone.utc)


def _offset(at: datetime, start: datetime) -> str:
    delta = at - start
    return f"+{format_duration(delta)} ({at.isoformat()})"


# --- running --------------------------------------------------------------------------


class ScenarioRunner:
    """Runs scenarios one after another in one database, emptying it before each."""

    def __init__(self, database_url: str, executor: StepExecutor | None = None) -> None:
        self._url = database_url
        self._executor = executor or RecordingExecutor()

    async def run(self, scenario: Scenario) -> ScenarioResult:
        result = ScenarioResult(scenario)
        try:
            rule_set = load_rule_set(list(scenario.rule_paths))
        except RuleError as exc:
            result.failures.append(f"rules failed to load: {exc.message}")
            return result
        await self._reset()
        clock = FakeClock(scenario.start)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(self._url, min_size=1, max_size=2, open=False)
        await pool.open(wait=True)
        try:
            settings = EngineSettings()
            rules = lambda: rule_set  # noqa: E731 - a fixed rule set for the whole scenario
            triggers = TriggerEngine(pool, rules, clock, settings)
            executor = ScriptedExecutor(scenario.executor) if scenario.executor else self._executor
            execution = ExecutionEngine(
                pool, rules, clock, settings, executor,
                owner=uuid.uuid4(), database_url=self._url, timezone=scenario.timezone,
            )
            await self._load_rows(pool, scenario)
            await self._play(pool, scenario, clock, triggers, execution)
            result.observations = await self._observe(pool, rule_set)
        finally:
            await pool.close()
        result.failures = compare(scenario, result.observations)
        return result

    async def _reset(self) -> None:
        # DELETE, not TRUNCATE: these tables hold a few rows each, and
        # TRUNCATE of some forty tables takes seconds.
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            async with conn.transaction():
                await conn.execute("SELECT set_config('rulesd.suppress_events', 'on', true)")
                cursor = await conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'st\\_%%'"
                )
                tables = [row[0] for row in await cursor.fetchall()]
                ledger = await (await conn.execute("SELECT to_regclass('action_ledger') IS NOT NULL")).fetchone()
                if ledger and ledger[0]:
                    tables.append("action_ledger")
                for table in [*tables, *ENGINE_TABLES]:
                    await conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))

    async def _load_rows(self, pool: AsyncConnectionPool[Any], scenario: Scenario) -> None:
        async with pool.connection() as conn:
            async with conn.transaction():
                # Starting rows are history: they must not enroll anything.
                await conn.execute("SELECT set_config('rulesd.suppress_events', 'on', true)")
                for entity, rows in scenario.rows.items():
                    for row in rows:
                        await _write_row(conn, "create", entity, row)

    async def _play(
        self,
        pool: AsyncConnectionPool[Any],
        scenario: Scenario,
        clock: FakeClock,
        triggers: TriggerEngine,
        execution: ExecutionEngine,
    ) -> None:
        for change in scenario.timeline:
            await _run_until(clock, triggers, execution, change.at)
            clock.set(max(clock.now(), change.at))
            async with pool.connection() as conn:
                async with conn.transaction():
                    before = await (await conn.execute("SELECT coalesce(max(id), 0) FROM workflow_events")).fetchone()
                    await _write_row(conn, change.action, change.entity, change.values)
                    # The change-capture trigger stamps the database's time;
                    # the scenario's events happen at the fake clock's time.
                    await conn.execute(
                        "UPDATE workflow_events SET occurred_at = %s WHERE id > %s", (clock.now(), before[0] if before else 0)
                    )
            await triggers.drain()
        await _run_until(clock, triggers, execution, scenario.until)
        clock.set(max(clock.now(), scenario.until))

    async def _observe(self, pool: AsyncConnectionPool[Any], rule_set: RuleSet) -> list[Observation]:
        observations: list[Observation] = []
        async with pool.connection() as conn:
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute("SELECT * FROM workflow_instances ORDER BY id")
                instances = {row["id"]: row for row in await cursor.fetchall()}
                await cursor.execute("SELECT * FROM workflow_step_runs ORDER BY id")
                runs = await cursor.fetchall()
        for instance in instances.values():
            base = dict(entity=instance["entity"], entity_id=instance["entity_id"], rule=instance["rule_id"])
            observations.append(Observation(kind="enrolled", at=instance["enrolled_at"], **base))
            if instance["status"] != "active" and instance["finished_at"] is not None:
                reason = instance["stop_reason"] or instance["error"] or ""
                observations.append(Observation(kind=instance["status"], at=instance["finished_at"], reason=reason, **base))
        for run in runs:
            instance = instances[run["instance_id"]]
            observations.append(
                Observation(
                    kind="step",
                    entity=instance["entity"],
                    entity_id=instance["entity_id"],
                    rule=instance["rule_id"],
                    at=run["started_at"],
                    step=run["step"],
                    outcome=run["status"],
                    reason=run["detail"] or "",
                )
            )
        observations.sort(key=lambda item: item.at)
        return observations


async def _run_until(clock: FakeClock, triggers: TriggerEngine, execution: ExecutionEngine, target: datetime) -> None:
    """Run every step due up to ``target``, jumping the clock to each due time in turn."""
    for _ in range(MAX_ROUNDS):
        await triggers.drain()
        next_due = await execution.next_due_at()
        if next_due is None or next_due > target:
            return
        clock.set(max(clock.now(), next_due))
        await execution.run_due(limit=1000)
    raise ScenarioError(f"gave up after {MAX_ROUNDS} rounds of due steps before {target.isoformat()}")


async def _write_row(conn: psycopg.AsyncConnection[Any], action: str, entity_name: str, values: dict[str, Any]) -> None:
    entity = get_entity(entity_name)
    for name in values:
        column = entity.column(name)
        if column is None or column.generated is not None:
            problem = "is computed by Postgres" if column is not None else "is not a column of this entity"
            raise ScenarioError(f"{entity_name}.{name} {problem}", hint=f"use the typed columns of {entity.table}")
    table = sql.Identifier(entity.table)
    if action == "delete":
        await conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(table), (values["id"],))
        return

    def cast(name: str) -> sql.Composable:
        column = entity.column(name)
        assert column is not None
        return sql.SQL("%s::{}").format(sql.SQL(column.type))

    def param(name: str) -> Any:
        column = entity.column(name)
        return json.dumps(values[name], default=str) if column is not None and column.type == "jsonb" else values[name]

    if action == "create":
        names = list(values)
        query = sql.SQL("INSERT INTO {} ({}, raw) VALUES ({}, %s)").format(
            table,
            sql.SQL(", ").join(sql.Identifier(name) for name in names),
            sql.SQL(", ").join(cast(name) for name in names),
        )
        await conn.execute(query, (*[param(name) for name in names], json.dumps(values, default=str)))
        return
    names = [name for name in values if name != "id"]
    if not names:
        return
    query = sql.SQL("UPDATE {} SET {}, raw = raw || %s::jsonb WHERE id = %s").format(
        table, sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(name), cast(name)) for name in names)
    )
    cursor = await conn.execute(
        query, (*[param(name) for name in names], json.dumps(values, default=str), values["id"])
    )
    if cursor.rowcount == 0:
        raise ScenarioError(f"update of {entity_name} {values['id']}: no such row; create it first")


# --- comparing ----------------------------------------------------------------------------------


def compare(scenario: Scenario, observations: list[Observation]) -> list[str]:
    """Match each expectation to one observation; return a line per difference."""
    failures: list[str] = []
    unmatched = list(observations)
    for expectation in scenario.expect:
        candidates = [item for item in unmatched if _same_kind(expectation, item)]
        match = next((item for item in candidates if _at_matches(expectation, item) and _reason_matches(expectation, item)), None)
        if match is not None:
            unmatched.remove(match)
            continue
        line = f"missing: {_describe_expectation(expectation, scenario.start)}"
        if candidates:
            line += "; observed instead: " + "; ".join(item.describe(scenario.start) for item in candidates[:3])
        failures.append(line)
    if scenario.exhaustive:
        failures.extend(f"unexpected: {item.describe(scenario.start)}" for item in unmatched)
    return failures


def _same_kind(expectation: Expectation, item: Observation) -> bool:
    if expectation.kind != item.kind or expectation.entity != item.entity or expectation.entity_id != item.entity_id:
        return False
    if expectation.rule is not None and expectation.rule != item.rule:
        return False
    if expectation.kind == "step":
        return expectation.step == item.step and expectation.outcome == item.outcome
    return True


def _at_matches(expectation: Expectation, item: Observation) -> bool:
    return expectation.at is None or abs((expectation.at - item.at).total_seconds()) < 1


def _reason_matches(expectation: Expectation, item: Observation) -> bool:
    return expectation.reason is None or expectation.reason.lower() in item.reason.lower()


def _describe_expectation(expectation: Expectation, start: datetime) -> str:
    text = f"{expectation.kind} {expectation.entity}:{expectation.entity_id}"
    if expectation.rule:
        text += f" ({expectation.rule})"
    if expectation.step:
        text += f" step {expectation.step} {expectation.outcome}"
    if expectation.at is not None:
        text += f" at {_offset(expectation.at, start)}"
    if expectation.reason:
        text += f" with reason containing {expectation.reason!r}"
    return text
