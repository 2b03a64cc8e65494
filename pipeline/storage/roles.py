"""A PostgreSQL role that can only read infersentry's tables (for Grafana and other readers).

Grafana runs whatever SQL a dashboard editor types, so its datasource should not hold the
consumer's read-write credentials. :func:`create_reader` creates (or updates) a login role that
can ``SELECT`` every table of the schema, including tables that later migrations create (default
privileges of the role that runs migrations), and nothing else: its sessions are read-only by
default and long queries are cut off by a statement timeout.

Idempotent: running it again resets the password and re-applies the grants.
"""

from __future__ import annotations

import re

from psycopg import sql
from sqlalchemy import Connection, Engine, text

#: Role names accepted: PostgreSQL identifiers without quoting surprises.
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ReaderRoleError(ValueError):
    """The reader role cannot be created with these arguments or on this database."""


def reader_role_statements(
    role: str, password: str, *, database: str, owner: str, schema: str = "public",
    statement_timeout: str = "60s",
) -> list[sql.Composed]:
    """The statements that make ``role`` a read-only login on ``database``.

    ``owner`` is the role that runs infersentry's migrations: tables it creates later are
    readable by ``role`` too.
    """
    if not _ROLE_NAME.match(role):
        raise ReaderRoleError(f"role name {role!r} must match {_ROLE_NAME.pattern}")
    if not password:
        raise ReaderRoleError("the reader role needs a non-empty password")
    r, s = sql.Identifier(role), sql.Identifier(schema)
    create_if_missing = sql.SQL(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) "
        "THEN CREATE ROLE {role} LOGIN; END IF; END $$"
    ).format(name=sql.Literal(role), role=r)
    return [
        create_if_missing,
        sql.SQL("ALTER ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD {}").format(
            r, sql.Literal(password)
        ),
        sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(r),
        sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(r, sql.Literal(statement_timeout)),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), r),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r),
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
            sql.Identifier(owner), s, r
        ),
    ]


def create_reader(engine: Engine, role: str, password: str, *, owner: str | None = None) -> None:
    """Create or update the read-only ``role`` on the database of ``engine`` (PostgreSQL only).

    ``owner`` defaults to the connecting role (the one that normally runs migrations).
    """
    if engine.dialect.name != "postgresql":
        raise ReaderRoleError(f"read-only roles need PostgreSQL; this database is {engine.dialect.name}")
    with engine.begin() as conn:
        database, current = conn.execute(text("SELECT current_database(), current_user")).one()
        existing = conn.execute(
            text("SELECT rolsuper OR rolbypassrls OR rolreplication FROM pg_roles WHERE rolname = :r"), {"r": role}
        ).first()
        if existing is not None and existing[0]:
            raise ReaderRoleError(f"role {role} already exists with superuser, replication or bypass-RLS rights")
        statements = reader_role_statements(role, password, database=database, owner=owner or current)
        _execute_all(conn, statements)


def drop_reader(engine: Engine, role: str, *, owner: str | None = None, schema: str = "public") -> None:
    """Revoke what :func:`create_reader` granted on this database and drop ``role``.

    Works without superuser rights (unlike ``DROP OWNED BY``). The role must have no grants left
    in other databases.
    """
    if not _ROLE_NAME.match(role):
        raise ReaderRoleError(f"role name {role!r} must match {_ROLE_NAME.pattern}")
    with engine.begin() as conn:
        database, current = conn.execute(text("SELECT current_database(), current_user")).one()
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is None:
            return
        r, s = sql.Identifier(role), sql.Identifier(schema)
        statements = [
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(s, r),
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE SELECT ON TABLES FROM {}").format(
                sql.Identifier(owner or current), s, r
            ),
            sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(s, r),
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(sql.Identifier(database), r),
            sql.SQL("DROP ROLE {}").format(r),
        ]
        _execute_all(conn, statements)


def _execute_all(conn: Connection, statements: list[sql.Composed]) -> None:
    """Run composed utility statements on the connection's psycopg cursor (they take no bind
    parameters, so identifiers and the password are quoted by :mod:`psycopg.sql`)."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cur = raw.cursor()
    try:
        for statement in statements:
            cur.execute(statement)
    finally:
        cur.close()
