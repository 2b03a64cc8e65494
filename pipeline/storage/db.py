"""Database access: URL resolution, engine creation, migrations, dialect-aware upserts."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import Connection

DEFAULT_DB_URL = "sqlite:///infersentry.db"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def resolve_db_url(url: str | None) -> str:
    """``--db`` if given, else ``$INFERSENTRY_DB``, else ``sqlite:///infersentry.db``."""
    return url or os.environ.get("INFERSENTRY_DB") or DEFAULT_DB_URL


def make_engine(url: str | None = None) -> Engine:
    """Create an engine for ``url`` (see :func:`resolve_db_url`).

    ``postgresql://`` URLs use psycopg 3. SQLite gets WAL mode and a busy timeout so that a
    reader (``alerts list``) never blocks a running replay.
    """
    url = resolve_db_url(url)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


#: Alembic's command API keeps module-level state: one migration at a time per process.
_MIGRATION_LOCK = threading.Lock()
#: Key of the PostgreSQL advisory lock that serialises migrations across processes.
_PG_MIGRATION_LOCK_KEY = 0x1F5E_7A11


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe from several threads and processes)."""
    cfg = alembic_config()
    with _MIGRATION_LOCK, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("alerts")


def insert_ignore(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert rows, skipping any whose primary key exists (idempotent batch write).

    One ``executemany`` per call. Returns the number of rows handed over (not the number new).
    """
    rows = list(rows)
    if not rows:
        return 0
    stmt = _dialect_insert(conn, table).on_conflict_do_nothing()
    conn.execute(stmt, rows)
    return len(rows)


def upsert(
    conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]], update_columns: Iterable[str]
) -> int:
    """Insert rows; where the primary key exists, overwrite only ``update_columns``."""
    rows = list(rows)
    if not rows:
        return 0
    ins = _dialect_insert(conn, table)
    keys = [c.name for c in table.primary_key.columns]
    stmt = ins.on_conflict_do_update(
        index_elements=keys, set_={c: getattr(ins.excluded, c) for c in update_columns}
    )
    conn.execute(stmt, rows)
    return len(rows)


def _dialect_insert(conn: Connection, table: Table) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise ValueError(f"unsupported database dialect {name!r}: use SQLite or PostgreSQL")
