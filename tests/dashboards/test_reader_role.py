"""Grafana's datasource with the read-only role (``infersentry db create-reader``) renders every panel.

docker-compose gives Grafana that role instead of the consumer's read-write credentials; this
runs every panel, variable and annotation query of every dashboard as that role on the seeded
database, and checks that the role cannot write.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from test_panels_sql import OVERRIDES, TIME_RANGE, _all_queries, _qid, run_sql

from dashboards import dashboard_files
from dashboards.grafana_sql import load_dashboard, render, resolve_variables
from pipeline.storage.db import make_engine
from pipeline.storage.roles import create_reader, drop_reader

PASSWORD = "grafana-reader-pw"


@pytest.fixture(scope="module")
def reader_engine(seeded_pg: Engine) -> Iterator[Engine]:
    role = f"grafana_{secrets.token_hex(4)}"
    create_reader(seeded_pg, role, PASSWORD)
    url = seeded_pg.url.set(username=role, password=PASSWORD)
    engine = make_engine(url.render_as_string(hide_password=False).replace("+psycopg", ""))
    yield engine
    engine.dispose()
    drop_reader(seeded_pg, role)


@pytest.mark.postgres
def test_every_query_runs_as_the_read_only_role(reader_engine: Engine) -> None:
    dashboards = {d["uid"]: d for d in map(load_dashboard, dashboard_files())}
    variables = {
        uid: resolve_variables(d, lambda sql: run_sql(reader_engine, sql)[1], TIME_RANGE, OVERRIDES)
        for uid, d in dashboards.items()
    }
    queries = _all_queries()
    assert len(queries) > 20
    empty = []
    for query in queries:
        _, rows = run_sql(reader_engine, render(query.sql, TIME_RANGE, variables[query.dashboard]))
        if not rows:
            empty.append(_qid(query))
    # the seed has data for every panel: as the reader too, nothing comes back empty
    assert not empty, empty


@pytest.mark.postgres
def test_read_only_role_cannot_change_reviews(reader_engine: Engine) -> None:
    with reader_engine.connect() as conn, pytest.raises(DBAPIError):
        conn.execute(text("UPDATE alerts SET status = 'resolved'"))
