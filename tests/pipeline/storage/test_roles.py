"""The read-only reader role (``infersentry db create-reader``), on the real PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from pipeline.cli import main
from pipeline.storage.db import make_engine, migrate
from pipeline.storage.roles import ReaderRoleError, create_reader, drop_reader, reader_role_statements

PASSWORD = "s3cret-'quoted\"-pw"  # quotes must survive literal quoting


def _as_reader(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def reader(pg_url: str) -> Iterator[str]:
    """A unique role name; dropped (with its grants in this database) after the test."""
    role = f"reader_{secrets.token_hex(4)}"
    yield role
    admin = make_engine(pg_url)
    drop_reader(admin, role)
    with admin.connect() as conn:
        assert conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is None
    admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("order", ["role_then_migrate", "migrate_then_role"])
def test_reader_selects_every_table_and_writes_nothing(pg_url: str, reader: str, order: str) -> None:
    owner = make_engine(pg_url)
    if order == "migrate_then_role":
        migrate(owner)
        create_reader(owner, reader, PASSWORD)
    else:  # docker-compose may create the role before the consumer's first migration
        create_reader(owner, reader, PASSWORD)
        migrate(owner)
    tables = inspect(owner).get_table_names()
    assert {"alerts", "runs", "dead_letters"} <= set(tables)
    owner.dispose()

    ro = make_engine(_as_reader(pg_url, reader))
    try:
        with ro.connect() as conn:
            for table in tables:
                conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()
            assert conn.execute(text("SHOW default_transaction_read_only")).scalar_one() == "on"
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "1min"
        for statement in ('DELETE FROM alerts', 'CREATE TABLE sneaky (x int)',
                          "UPDATE runs SET status = 'x'"):
            with ro.connect() as conn, pytest.raises(DBAPIError):
                conn.execute(text(statement))
        # even with the read-only default switched off, the grants refuse writes
        with ro.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SET SESSION default_transaction_read_only = off"))
            with pytest.raises(DBAPIError, match="permission denied"):
                conn.execute(text("DELETE FROM alerts"))
    finally:
        ro.dispose()


@pytest.mark.postgres
def test_create_reader_is_idempotent_and_resets_the_password(pg_url: str, reader: str) -> None:
    owner = make_engine(pg_url)
    migrate(owner)
    create_reader(owner, reader, "first-password")
    create_reader(owner, reader, PASSWORD)
    owner.dispose()
    ro = create_engine(_as_reader(pg_url, reader).replace("postgresql://", "postgresql+psycopg://", 1))
    with ro.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alerts")).scalar_one() == 0
    ro.dispose()


@pytest.mark.postgres
def test_cli_create_reader(pg_url: str, reader: str, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("INFERSENTRY_READER_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["db", "create-reader", reader, "--db", pg_url])
    assert exc.value.code == 2 and "INFERSENTRY_READER_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("GRAFANA_DB_PASSWORD", PASSWORD)
    main(["db", "create-reader", reader, "--db", pg_url, "--password-env", "GRAFANA_DB_PASSWORD"])
    assert f"read-only role {reader} ready" in capsys.readouterr().out
    ro = make_engine(_as_reader(pg_url, reader))
    with ro.connect() as conn:  # the CLI migrated first, so the tables are there and readable
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 0
    ro.dispose()


def test_cli_create_reader_refuses_sqlite(tmp_path: object, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INFERSENTRY_READER_PASSWORD", "pw")
    with pytest.raises(SystemExit) as exc:
        main(["db", "create-reader", "grafana_reader", "--db", f"sqlite:///{tmp_path}/x.db"])
    assert exc.value.code == 2
    assert "need PostgreSQL" in capsys.readouterr().err


@pytest.mark.postgres
def test_refuses_to_turn_a_superuser_into_a_reader(pg_url: str) -> None:
    with pytest.raises(ReaderRoleError, match="superuser"):
        create_reader(make_engine(pg_url), "postgres", "pw")


@pytest.mark.parametrize("role", ["Grafana", "x; drop table alerts", "", "a" * 64])
def test_role_names_are_validated(role: str) -> None:
    with pytest.raises(ReaderRoleError):
        reader_role_statements(role, "pw", database="db", owner="o")
