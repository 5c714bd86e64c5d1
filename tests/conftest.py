"""Shared fixtures: the catalog, and a real throwaway PostgreSQL (one server per test session).

Set TEST_DATABASE_URL to run against an existing PostgreSQL instead of starting one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.catalog import Catalog, load_catalog
from router.db.database import Database
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def catalog_path() -> Path:
    return ROOT / "models_config.json"


@pytest.fixture(scope="session")
def catalog(catalog_path: Path) -> Catalog:
    return load_catalog(catalog_path)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | None]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    server = PostgresServer()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer | None) -> str:
    """The URL of a migrated PostgreSQL database shared by the session's tests."""
    url = os.environ.get("TEST_DATABASE_URL") or (
        pg_server.create_database("comfy_router") if pg_server else ""
    )
    db = Database(url)
    db.migrate()
    db.dispose()
    return url


@pytest.fixture
def pg_db(pg_server: PostgresServer | None) -> Iterator[Database]:
    """A fresh, migrated PostgreSQL database for one test (isolated from the others)."""
    if pg_server is None:
        pytest.skip("a fresh database per test needs the managed server (TEST_DATABASE_URL is set)")
    url = pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    db = Database(url)
    db.migrate()
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def own_pg() -> Iterator[tuple[PostgresServer, Database]]:
    """A PostgreSQL server of one test alone (with a migrated database), for tests that stop and
    start it: the session's server is never touched."""
    server = PostgresServer()
    server.init()
    server.start()
    db = Database(server.create_database("own"))
    db.migrate()
    try:
        yield server, db
    finally:
        db.dispose()
        server.destroy()
