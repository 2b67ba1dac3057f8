"""The generated field reference matches the catalog."""

from __future__ import annotations

from pathlib import Path

from rulesd.servicetitan.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "entities.md"


def test_entities_doc_matches_catalog() -> None:
    assert DOC.read_text() == render(), "regenerate: python -m rulesd.servicetitan.reference > docs/entities.md"
