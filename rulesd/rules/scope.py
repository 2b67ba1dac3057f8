"""Name resolution for conditions and templates: which ``alias.field`` paths a rule may read.

A rule triggered on entity E reads E itself and every entity reachable
from E through to-one relations of the catalog, each under its alias
(``estimate``, ``customer``, ``job``...), plus the event (``event.kind``,
``event.from``, ``event.to``, ``event.changes``). To-many relations (a
customer's contacts) are not reachable from conditions or templates,
because one path must name one value; the engine hands contact lists to
the agent as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rulesd.rules.diagnostics import did_you_mean
from rulesd.servicetitan.catalog import ENTITIES, Entity, related_entities

EVENT_ALIAS = "event"
EVENT_KINDS = ("created", "updated", "status_changed", "deleted")
# The condition language's kind for each field of ``event``.
EVENT_FIELDS: dict[str, str] = {"kind": "string", "from": "string", "to": "string", "changes": "json"}


@dataclass(frozen=True)
class Field:
    """A resolved ``alias.field`` path.

    ``kind`` is the condition language's value kind (``number``, ``string``,
    ``boolean``, ``time``, ``json``). ``status_values`` lists the values the
    catalog knows when the field is a status (an entity's status column,
    ``event.from`` or ``event.to``), else it is empty.
    """

    alias: str
    name: str
    kind: str
    status_values: tuple[str, ...] = ()
    status_entity: str = ""


class PathError(Exception):
    """Raised when a path names no alias or field. ``part`` is the index of the bad part."""

    def __init__(self, message: str, part: int) -> None:
        super().__init__(message)
        self.message = message
        self.part = part


@dataclass(frozen=True)
class Scope:
    """The aliases a rule triggered on ``trigger_entity`` may read, each mapped to its entity."""

    trigger_entity: str
    aliases: dict[str, Entity]

    @classmethod
    def for_trigger(cls, entity_name: str) -> Scope:
        return _scope_for_trigger(entity_name)

    @classmethod
    def _build(cls, entity_name: str) -> Scope:
        paths = related_entities(entity_name)
        aliases = {
            alias: ENTITIES[path[-1].entity] if path else ENTITIES[entity_name] for alias, path in paths.items()
        }
        return cls(trigger_entity=entity_name, aliases=aliases)

    def resolve(self, parts: tuple[str, ...]) -> Field:
        """Resolve ``parts`` such as ``('estimate', 'status')``, or raise ``PathError`` naming the bad part."""
        alias = parts[0]
        if alias == EVENT_ALIAS:
            return self._resolve_event(parts)
        entity = self.aliases.get(alias)
        if entity is None:
            raise PathError(self._unknown_alias_message(alias), 0)
        if len(parts) == 1:
            raise PathError(f"'{alias}' is a row, not a field: write {alias}.<field>", 0)
        name = parts[1]
        column = entity.column(name)
        if column is None:
            raise PathError(self._unknown_field_message(alias, entity, name), 1)
        if len(parts) > 2:
            raise PathError(f"'{alias}.{name}' is a field and has no field '{parts[2]}'", 2)
        if name == entity.status_column:
            return Field(alias, name, column.kind, entity.status_values, entity.name)
        return Field(alias, name, column.kind)

    def _resolve_event(self, parts: tuple[str, ...]) -> Field:
        if len(parts) == 1:
            raise PathError("'event' is not a value: write event.kind, event.from, event.to or event.changes", 0)
        name = parts[1]
        if name not in EVENT_FIELDS:
            known = ", ".join(f"event.{field}" for field in EVENT_FIELDS)
            raise PathError(f"unknown field 'event.{name}'{did_you_mean(name, EVENT_FIELDS)}; known: {known}", 1)
        if len(parts) > 2:
            raise PathError(f"'event.{name}' has no field '{parts[2]}'", 2)
        if name in ("from", "to"):
            entity = ENTITIES[self.trigger_entity]
            return Field(EVENT_ALIAS, name, "string", entity.status_values, entity.name)
        if name == "kind":
            return Field(EVENT_ALIAS, name, "string", EVENT_KINDS, "event")
        return Field(EVENT_ALIAS, name, EVENT_FIELDS[name])

    def _unknown_alias_message(self, alias: str) -> str:
        reachable = ", ".join(sorted(self.aliases))
        if alias in ENTITIES:
            return (
                f"'{alias}' is not related to the trigger entity '{self.trigger_entity}' through "
                f"to-one relations; reachable: {reachable}, event"
            )
        suggestion = did_you_mean(alias, [*self.aliases, EVENT_ALIAS])
        return f"unknown entity '{alias}'{suggestion}; reachable from {self.trigger_entity}: {reachable}, event"

    def _unknown_field_message(self, alias: str, entity: Entity, name: str) -> str:
        relation = entity.relation(name)
        if relation is not None and relation.cardinality == "to_many":
            return (
                f"'{alias}.{name}' is a list of {relation.entity} rows; conditions and templates read "
                f"single values only (the agent receives contact lists as data)"
            )
        if relation is not None:
            return f"'{alias}.{name}' is a related row, not a field: write {name}.<field>"
        names = [column.name for column in entity.all_columns]
        suggestion = did_you_mean(name, names)
        if suggestion:
            return f"unknown field '{alias}.{name}'{suggestion}"
        return f"unknown field '{alias}.{name}'; fields of {entity.name}: {', '.join(names)}"


@lru_cache(maxsize=None)
def _scope_for_trigger(entity_name: str) -> Scope:
    # The catalog is fixed at import, so each entity's scope is built once.
    return Scope._build(entity_name)
