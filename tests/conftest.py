"""Shared fixtures: databases (SQLite and the real PostgreSQL) for every storage test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql://infersentry:infersentry@127.0.0.1:5432/infersentry_test"


def pg_admin_url() -> str:
    return os.environ.get("INFERSENTRY_TEST_PG_URL", DEFAULT_PG_URL)


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards).

    PostgreSQL is started by the test command (``scripts/test.sh``); if it is unreachable the
    test fails rather than skips.
    """
    admin = create_engine(_psycopg(pg_admin_url()), isolation_level="AUTOCOMMIT")
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, reported loudly
        admin.dispose()
        pytest.fail(f"PostgreSQL at {pg_admin_url()} is not reachable ({exc}); run scripts/pg-up.sh")
    url = make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """Every storage test runs twice: on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/infersentry.db"
    return request.getfixturevalue("pg_url")
