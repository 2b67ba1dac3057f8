"""Render the entity catalog as the Markdown field reference in ``docs/entities.md``.

Rule authors need to know which fields a condition or placeholder can
name. The catalog is the source, and a test keeps the page in step with it.
"""

from __future__ import annotations

from rulesd.servicetitan.catalog import ENTITY_LIST, Entity, related_entities

_HEADER = """# Entities and fields

Every field a rule condition or a `{{placeholder}}` can name, by entity.
Generated from `rulesd/servicetitan/catalog.py` by
`python -m rulesd.servicetitan.reference > docs/entities.md`; a test
fails when this page and the catalog differ.

A path is `alias.field`. The alias is the trigger's entity or an entity
reachable from it through to-one relations (for an estimate: `customer`,
`job`, `location`…); the "reachable" line of each entity lists them.
Values: number (`bigint`, `integer`, `numeric`), string (`text`),
boolean, time (`timestamptz`, UTC). Every field may be null.
"""


def render() -> str:
    """Return the whole page."""
    parts = [_HEADER]
    for entity in ENTITY_LIST:
        parts.append(_entity_section(entity))
    return "\n".join(parts)


def _entity_section(entity: Entity) -> str:
    lines = [f"## {entity.name}", ""]
    lines.append(f"Table `{entity.table}`; API `/{entity.module}/v2/tenant/{{tenant}}/{entity.list_path}`.")
    if entity.status_column:
        values = ", ".join(entity.status_values)
        lines.append(f"Status field `{entity.status_column}`: {values}.")
    reachable = [alias for alias in related_entities(entity.name) if alias != entity.name]
    lines.append(f"Reachable in rules triggered by it: {', '.join(reachable) or 'none'}.")
    lines += ["", "| field | type | from the API record |", "|---|---|---|"]
    for column in entity.all_columns:
        source = f"`{column.source}`" if column.source else f"computed: `{column.generated}`"
        note = f" ({column.description})" if column.description else ""
        lines.append(f"| `{column.name}` | {column.type} | {source}{note} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
