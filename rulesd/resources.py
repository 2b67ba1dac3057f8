"""Locate the files rulesd ships beside its code: SQL migrations and JSON Schemas.

A wheel carries them as ``rulesd/_data/{sql,schema}``; a checkout or an
editable install finds them at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory ``name`` (``sql`` or ``schema``), installed or checked out."""
    installed = _PACKAGE_DIR / "_data" / name
    if installed.is_dir():
        return installed
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"rulesd data directory {name!r} not found in {installed} or {checkout}; reinstall rulesd"
    )


def sql_dir() -> Path:
    return data_dir("sql")


def schema_path(filename: str) -> Path:
    return data_dir("schema") / filename
