"""The dashboards on what the pipeline really writes: replay a generated stream into PostgreSQL,
then run every dashboard query on it. Catches drift between what detectors write (statistic names,
explanation keys, kinds) and what the panels select."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _fresh_database
from sqlalchemy import Engine
from test_panels_sql import DASHBOARDS, _all_queries, _qid, run_sql

from dashboards.grafana_sql import PanelQuery, TimeRange, iter_panels, render, resolve_variables
from pipeline.config import MonitorConfig
from pipeline.replay import replay_file
from pipeline.storage.store import Store
from pipeline.traffic import generate, write_jsonl

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, str, object]]:
    work: Path = tmp_path_factory.mktemp("dash-replay")
    traffic = generate("mixed", n_events=20_000, seed=4)
    write_jsonl(traffic, work / "p.jsonl", work / "l.jsonl")
    for engine in _fresh_database("dash_pipeline"):
        summary = replay_file(Store(engine), MonitorConfig(), work / "p.jsonl", work / "l.jsonl")
        yield engine, summary.run, traffic.truth


def _time_range(truth: object) -> TimeRange:
    start = truth.start_ts  # type: ignore[attr-defined]
    return TimeRange(start - 60, start + 2 * 86400)


def _variables(engine: Engine, uid: str, run: str, truth: object) -> dict[str, object]:
    dash = next(d for d in DASHBOARDS.values() if d["uid"] == uid)
    return resolve_variables(dash, lambda sql: run_sql(engine, sql)[1], _time_range(truth), {"run": run})


@pytest.mark.parametrize("query", _all_queries(), ids=_qid)
def test_every_query_runs_on_pipeline_output(replayed: tuple[Engine, str, object], query: PanelQuery) -> None:
    engine, run, truth = replayed
    variables = _variables(engine, query.dashboard, run, truth)
    run_sql(engine, render(query.sql, _time_range(truth), variables))  # type: ignore[arg-type]


def _panel(engine: Engine, uid: str, title: str, run: str, truth: object) -> list[dict[str, object]]:
    dash = next(d for d in DASHBOARDS.values() if d["uid"] == uid)
    panel = next(p for p in iter_panels(dash) if p.get("title") == title)
    variables = _variables(engine, uid, run, truth)
    cols, rows = run_sql(engine, render(panel["targets"][0]["rawSql"], _time_range(truth), variables))  # type: ignore[arg-type]
    return [dict(zip(cols, r, strict=True)) for r in rows]


def test_key_panels_show_the_injected_drift_and_attackers(replayed: tuple[Engine, str, object]) -> None:
    engine, run, truth = replayed
    open_alerts = _panel(engine, "infersentry-triage", "Open alerts (open + acknowledged, any time)", run, truth)
    kinds = {r.get("kind") for r in open_alerts}
    assert "drift" in kinds and {"attack_campaign", "extraction"} & kinds
    text = " ".join(str(v) for r in open_alerts for v in r.values())
    for attacker in truth.attacker_ids:  # type: ignore[attr-defined]
        assert attacker in text
    campaigns = _panel(engine, "infersentry-triage", "Attack campaigns and extraction, per caller", run, truth)
    assert {str(r["caller"]) for r in campaigns} >= set(truth.attacker_ids)  # type: ignore[attr-defined]


def test_drift_dashboard_plots_the_detectors_windows(replayed: tuple[Engine, str, object]) -> None:
    engine, run, truth = replayed
    rows = _panel(engine, "infersentry-drift", "Score ÷ threshold per statistic (above 1 = over threshold)", run,
                  truth)
    assert len(rows) > 10
    alerts = _panel(engine, "infersentry-drift", "Drift and performance alerts of this model", run, truth)
    assert alerts
