"""Fixtures shared by every test: a real Postgres server and fresh, migrated databases.

The server is the embedded Postgres (started once per test session in a
temporary directory) unless RULESD_TEST_DATABASE_URL names another one,
for example postgresql://postgres@127.0.0.1:5432/postgres. Each test that
asks for ``database_url`` gets its own database, cloned from a template
that has every migration applied, and dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from rulesd.db import migrate
from rulesd.db.server import start_embedded

TEST_DATABASE_ENV = "RULESD_TEST_DATABASE_URL"


def with_database(url: str, name: str) -> str:
    """Return ``url`` pointing at database ``name`` on the same server."""
    return make_conninfo(url, dbname=name)


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def database_server_url() -> Iterator[str]:
    """URL of a Postgres server tests may create databases on."""
    configured = os.environ.get(TEST_DATABASE_ENV)
    if configured:
        yield configured
        return
    data_root = Path(tempfile.mkdtemp(prefix="rulesd-test-pg-"))
    server = start_embedded(data_root / "pgdata")
    try:
        yield with_database(server.url, "postgres")
    finally:
        server.close()
        shutil.rmtree(data_root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(database_server_url: str) -> Iterator[str]:
    """Name of a database with every migration applied, cloned by ``database_url``."""
    name = f"rulesd_template_{uuid.uuid4().hex[:12]}"
    url = create_database(database_server_url, name)
    migrate.upgrade(url)
    try:
        yield name
    finally:
        drop_database(database_server_url, name)


@pytest.fixture
def database_url(database_server_url: str, template_database: str) -> Iterator[str]:
    """URL of a fresh database with every migration applied, dropped after the test."""
    name = f"rulesd_test_{uuid.uuid4().hex[:12]}"
    url = create_database(database_server_url, name, template=template_database)
    try:
        yield url
    finally:
        drop_database(database_server_url, name)


@pytest.fixture
def empty_database_url(database_server_url: str) -> Iterator[str]:
    """URL of a fresh database with no migrations applied."""
    name = f"rulesd_empty_{uuid.uuid4().hex[:12]}"
    url = create_database(database_server_url, name)
    try:
        yield url
    finally:
        drop_database(database_server_url, name)
