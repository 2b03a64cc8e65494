"""Fixtures for the dashboard tests: fresh PostgreSQL databases (migrated, seeded or empty).

The URL of the test server comes from ``INFERSENTRY_TEST_PG_URL``; the test command starts the
server (``scripts/pg-up.sh``), so an unreachable server fails the tests instead of skipping them.
Each session creates its own databases and drops them afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from dashboard_seed import seed
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from pipeline.storage.db import make_engine, migrate

PG_URL = os.environ.get(
    "INFERSENTRY_TEST_PG_URL", "postgresql://infersentry:infersentry@127.0.0.1:5432/infersentry_test"
)


def _fresh_database(tag: str) -> Iterator[Engine]:
    admin = make_engine(PG_URL)
    name = f"infersentry_{tag}_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL unreachable at {PG_URL} (start it with scripts/pg-up.sh): {exc}")
    engine = make_engine(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def empty_pg() -> Iterator[Engine]:
    """A migrated database with no rows at all (a fresh installation)."""
    yield from _fresh_database("dash_empty")


@pytest.fixture(scope="session")
def seeded_pg() -> Iterator[Engine]:
    """A migrated database with a few realistic rows in every table (see ``dashboard_seed.seed``)."""
    for engine in _fresh_database("dash"):
        seed(engine)
        yield engine
