"""Every dashboard query runs on the real PostgreSQL schema and returns what a reviewer expects.

How: each dashboard JSON is loaded; every template variable, annotation and panel query is taken
out; template variables are resolved the way Grafana does on load (running the variables' own SQL
against the database, "All" where offered, with a few overrides such as the run and the alert to
drill into); variables and macros are expanded by :mod:`dashboards.grafana_sql`; and the result is
executed in a READ ONLY transaction on a freshly migrated database, seeded with realistic rows (see
``conftest.seed``). The same queries also run on an empty database (a fresh installation).

The JSON structure is checked without a database: unique ids, the provisioned datasource uid,
rawSql on every target, grid positions that fit and do not overlap, and that the committed JSON is
what ``python -m dashboards.build`` generates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pytest
import yaml
from dashboard_seed import LIVE, T0, TIME_RANGE
from sqlalchemy import Engine

from dashboards import DATASOURCE_TYPE, DATASOURCE_UID, JSON_DIR, PROVISIONING_DIR, build, dashboard_files
from dashboards.grafana_sql import (
    PanelQuery,
    TimeRange,
    VarValue,
    iter_panels,
    iter_queries,
    load_dashboard,
    render,
    resolve_variables,
)

DASHBOARDS = {path.name: load_dashboard(path) for path in dashboard_files()}
# What a reviewer would pick: the live run, and the campaign alert to drill into.
OVERRIDES: dict[str, str] = {"run": LIVE, "alert": "a-camp-1"}


def _all_queries() -> list[PanelQuery]:
    return [q for d in DASHBOARDS.values() for q in iter_queries(d)]


def _qid(q: PanelQuery) -> str:
    return f"{q.dashboard}:{q.where}:{q.title}:{q.ref_id}"


# -- running queries --------------------------------------------------------------------------


def run_sql(engine: Engine, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Execute one rendered query read-only, as Grafana does (no client-side parameters, so a
    ``%`` in the SQL is just a character); return column names and rows."""
    with engine.connect() as conn:
        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(sql)
            cols = [d[0] for d in cur.description or ()]
            rows = [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()
            conn.rollback()
    return cols, rows


@cache
def _variables_cached(engine_id: int, uid: str) -> dict[str, VarValue]:
    engine = _ENGINES[engine_id]
    dash = next(d for d in DASHBOARDS.values() if d["uid"] == uid)
    return resolve_variables(dash, lambda sql: run_sql(engine, sql)[1], TIME_RANGE, OVERRIDES)


_ENGINES: dict[int, Engine] = {}


def variables_for(engine: Engine, uid: str) -> dict[str, VarValue]:
    _ENGINES[id(engine)] = engine
    return _variables_cached(id(engine), uid)


def panel_rows(engine: Engine, uid: str, title: str, overrides: Mapping[str, VarValue] | None = None,
               time_range: TimeRange = TIME_RANGE) -> list[dict[str, Any]]:
    """Rows of the (single-target) panel titled ``title``, as dicts."""
    dash = next(d for d in DASHBOARDS.values() if d["uid"] == uid)
    panels = [p for p in iter_panels(dash) if p.get("title") == title]
    assert len(panels) == 1, f"{uid}: no single panel titled {title!r}"
    variables = {**variables_for(engine, uid), **(overrides or {})}
    cols, rows = run_sql(engine, render(panels[0]["targets"][0]["rawSql"], time_range, variables))
    return [dict(zip(cols, r, strict=True)) for r in rows]


# -- every query runs -------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("query", _all_queries(), ids=_qid)
def test_query_runs_and_returns_rows_on_seeded_database(seeded_pg: Engine, query: PanelQuery) -> None:
    variables = variables_for(seeded_pg, query.dashboard)
    sql = render(query.sql, TIME_RANGE, variables)
    cols, rows = run_sql(seeded_pg, sql)
    # the seed has data for every panel: an empty result means a wrong join or filter
    assert rows, f"{_qid(query)} returned no rows:\n{sql}"
    if query.format == "time_series":
        assert cols[0] == "time", f"{_qid(query)}: a time series must have its time column first"
        times = [r[0] for r in rows]
        assert times == sorted(times), f"{_qid(query)}: time series rows must be ordered by time"
    if query.where == "annotation":
        assert {"time", "text"} <= set(cols)


@pytest.mark.postgres
@pytest.mark.parametrize("query", _all_queries(), ids=_qid)
def test_query_runs_on_empty_database(empty_pg: Engine, query: PanelQuery) -> None:
    """A fresh installation: no runs, no alerts. Nothing may fail (e.g. ``IN ()``)."""
    dash = next(d for d in DASHBOARDS.values() if d["uid"] == query.dashboard)
    variables = resolve_variables(dash, lambda sql: run_sql(empty_pg, sql)[1], TIME_RANGE)
    run_sql(empty_pg, render(query.sql, TIME_RANGE, variables))


# -- key panels return the right rows --------------------------------------------------------------


@pytest.mark.postgres
def test_variables_offer_the_seeded_values(seeded_pg: Engine) -> None:
    triage = variables_for(seeded_pg, build.TRIAGE_UID)
    assert triage["run"] == VarValue((LIVE,), quoted=False)
    assert triage["model"] == VarValue(("digits", "fraud"), quoted=True)
    assert set(triage["status"].values) == set(build.STATUSES)
    assert set(triage["kind"].values) == set(build.KINDS)
    drift = variables_for(seeded_pg, build.DRIFT_UID)
    assert drift["model"] == VarValue(("digits",), quoted=False)
    assert drift["stat"].values == ("confidence", "feature:f3")
    assert set(drift["kind"].values) == {"drift", "performance"}
    # without an override Grafana selects the first run: the running one
    dash = DASHBOARDS["alert-triage.json"]
    plain = resolve_variables(dash, lambda sql: run_sql(seeded_pg, sql)[1], TIME_RANGE)
    assert plain["run"].values == (LIVE,)


@pytest.mark.postgres
def test_open_alerts_panel_lists_undecided_alerts_of_the_run_only(seeded_pg: Engine) -> None:
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, "Open alerts (open + acknowledged, any time)")
    ids = [r["alert_id"] for r in rows]
    # open and acknowledged, including one raised long before the time range; not the resolved
    # or false-positive ones, and not the replay's alert with the same id
    assert sorted(ids) == ["a-camp-1", "a-dq-1", "a-drift-1", "a-outlier-old"]
    assert ids[0] == "a-camp-1"  # critical first
    camp = rows[0]
    assert camp["summary"].startswith("acct-66 probed")
    assert camp["evidence events"] == 3
    assert camp["score / threshold"] == pytest.approx(14.2 / 9.0)
    assert camp["review command"] == "infersentry alerts review a-camp-1 --run live --status confirmed"
    by_id = {r["alert_id"]: r for r in rows}
    assert by_id["a-dq-1"]["summary"] == "dead-letter surge: 2 in 60 s"  # 'reason' when no 'summary'
    assert by_id["a-dq-1"]["reviewer"] == "bob"
    assert by_id["a-outlier-old"]["summary"] == '{"top_features": ["f1"]}'  # raw JSON as a last resort


@pytest.mark.postgres
def test_status_and_kind_filters_apply(seeded_pg: Engine) -> None:
    title = "All alerts in range (status filter applies)"
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, title)
    assert {r["alert_id"] for r in rows} == {"a-drift-1", "a-camp-1", "a-adv-1", "a-dq-1", "a-ext-1"}
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, title,
                      {"status": VarValue.multi(["resolved", "false_positive"])})
    assert {(r["alert_id"], r["reviewer"], r["note"]) for r in rows} == {
        ("a-adv-1", "alice", "blocked acct-66"), ("a-ext-1", "carol", "load test")}
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, title, {"kind": VarValue.multi(["drift"])})
    assert [r["alert_id"] for r in rows] == ["a-drift-1"]
    # a narrower time range leaves out the older alerts
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, title, time_range=TimeRange(T0 - 1250, T0))
    assert {r["alert_id"] for r in rows} == {"a-camp-1", "a-ext-1"}


@pytest.mark.postgres
def test_counts_by_kind_severity_and_status(seeded_pg: Engine) -> None:
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, "Alerts by kind and reviewer status")
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["adversarial"]["resolved"] == 1
    assert by_kind["extraction"]["false_positive"] == 1
    assert by_kind["extraction"]["confirmed % of decided"] == 0
    assert by_kind["attack_campaign"]["acknowledged"] == 1
    assert "outlier" not in by_kind  # out of the time range
    sev = {r["kind"]: (r["critical"], r["warning"], r["info"])
           for r in panel_rows(seeded_pg, build.TRIAGE_UID, "Alerts by kind and severity")}
    assert sev["attack_campaign"] == (1, 0, 0) and sev["data_quality"] == (0, 0, 1)
    pie = {r["status"]: r["alerts"] for r in panel_rows(seeded_pg, build.TRIAGE_UID, "Reviewer status breakdown")}
    assert pie == {"open": 1, "acknowledged": 2, "resolved": 1, "false_positive": 1}
    reviewers = {r["reviewer"]: r["total"] for r in panel_rows(seeded_pg, build.TRIAGE_UID, "Reviewers")}
    assert reviewers == {"(not reviewed)": 1, "alice": 1, "bob": 1, "carol": 1, "dave": 1}
    series = panel_rows(seeded_pg, build.TRIAGE_UID, "Alerts over time by kind")
    assert sum(r["alerts"] for r in series) == 5
    assert all(float(r["time"]) % 60 == 0 for r in series)  # bucketed by $__interval (1m here)


@pytest.mark.postgres
def test_drill_down_shows_evidence_payloads_and_review_history(seeded_pg: Engine) -> None:
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, "Evidence of the selected alert: flagged events and payloads")
    assert [(r["event_id"], r["flagged by"]) for r in rows] == [
        ("ev-1", "query_probe"), ("ev-2", "query_probe"), ("ev-3", "adv_margin"), ("ev-3", "query_probe")]
    assert json.loads(rows[0]["payload"])["client_id"] == "acct-66"
    selected = panel_rows(seeded_pg, build.TRIAGE_UID, "Selected alert")
    assert [r["alert_id"] for r in selected] == ["a-camp-1"]
    # a drift alert's trigger event was never flagged: listed, without a payload
    drift = panel_rows(seeded_pg, build.TRIAGE_UID, "Evidence of the selected alert: flagged events and payloads",
                       {"alert": VarValue.single("a-drift-1")})
    assert [(r["event_id"], r["payload"]) for r in drift] == [("ev-100", None)]
    assert drift[0]["reason"].startswith("not stored")
    history = panel_rows(seeded_pg, build.TRIAGE_UID, "Review history of the selected alert",
                         {"alert": VarValue.single("a-adv-1")})
    assert [(r["status"], r["reviewer"], r["note"]) for r in history] == [
        ("acknowledged", "alice", ""), ("resolved", "alice", "blocked acct-66")]
    # a quote in the textbox cannot break out of the SQL string
    assert panel_rows(seeded_pg, build.TRIAGE_UID, "Selected alert",
                      {"alert": VarValue.single("x' OR '1'='1")}) == []


@pytest.mark.postgres
def test_campaign_panels_join_their_evidence(seeded_pg: Engine) -> None:
    rows = panel_rows(seeded_pg, build.TRIAGE_UID, "Attack campaigns and extraction, per caller")
    by_id = {r["alert_id"]: r for r in rows}
    assert set(by_id) == {"a-camp-1", "a-ext-1"}
    camp = by_id["a-camp-1"]
    assert (camp["caller"], camp["evidence ids"], camp["flagged events stored"]) == ("acct-66", 3, 3)
    assert camp["max event score"] == pytest.approx(14.2)
    assert camp["flagged by"] == "adv_margin, query_probe"
    evidence = panel_rows(seeded_pg, build.TRIAGE_UID, "Campaign evidence: the callers' flagged queries")
    assert [(r["caller"], r["event_id"]) for r in evidence if r["flagged by"] == "query_probe"] == [
        ("acct-66", "ev-1"), ("acct-66", "ev-2"), ("acct-66", "ev-3")]
    callers = panel_rows(seeded_pg, build.TRIAGE_UID, "Top callers by flagged events")
    assert (callers[0]["caller"], callers[0]["flagged events"]) == ("acct-66", 4)


@pytest.mark.postgres
def test_drift_dashboard_series_and_annotations(seeded_pg: Engine) -> None:
    ratio = panel_rows(seeded_pg, build.DRIFT_UID, "Score ÷ threshold per statistic (above 1 = over threshold)")
    assert {r["metric"] for r in ratio} == {"feature:f3 · v3 · p0 · ks_window", "confidence · v3 · p0 · ks_window"}
    over = [r for r in ratio if r["score / threshold"] > 1]
    assert len(over) == 4  # windows 4 and 5 of both statistics
    latest = panel_rows(seeded_pg, build.DRIFT_UID, "Latest window per statistic")
    assert {(r["stat"], r["window #"]) for r in latest} == {("feature:f3", 5), ("confidence", 5)}
    dash = DASHBOARDS["drift.json"]
    ann = next(a for a in dash["annotations"]["list"] if "target" in a)
    cols, rows = run_sql(seeded_pg, render(ann["target"]["rawSql"], TIME_RANGE,
                                           variables_for(seeded_pg, build.DRIFT_UID)))
    assert len(rows) == 1
    record = dict(zip(cols, rows[0], strict=True))
    assert record["text"] == "drift (warning, open): feature f3 shifted (KS 0.31 > 0.12)"
    assert record["tags"] == "drift,warning,open"
    assert record["timeend"].timestamp() == pytest.approx(T0 - 1800)


@pytest.mark.postgres
def test_health_dashboard(seeded_pg: Engine) -> None:
    uid = build.HEALTH_UID
    series = panel_rows(seeded_pg, uid, "Dead letters over time, by reason")
    assert {r["metric"]: r["dead letters"] for r in series} == {"malformed JSON": 1, "schema": 1}
    reasons = panel_rows(seeded_pg, uid, "Dead letters by reason")
    assert sum(r["dead letters"] for r in reasons) == 3  # including the one without an event time
    recent = panel_rows(seeded_pg, uid, "Recent dead letters")
    assert [r["position"] for r in recent] == [7, 1042, 1041]
    runs = panel_rows(seeded_pg, uid, "Runs")
    assert [(r["run"], r["status"], r["dead letters"]) for r in runs] == [
        ("live", "running", 3), ("replay-2026-11", "finished", 0)]
    assert float(runs[0]["dead letters %"]) == pytest.approx(100 * 3 / 48214, abs=1e-3)
    checkpoints = panel_rows(seeded_pg, uid, "Checkpoints of this run")
    assert [(r["scope"], r["behind newest scope"]) for r in checkpoints] == [
        ("partition-0", 0.0), ("partition-1", 60.0)]
    dq = panel_rows(seeded_pg, uid, "Data-quality alerts")
    assert [(r["alert_id"], r["status"]) for r in dq] == [("a-dq-1", "acknowledged")]
    assert panel_rows(seeded_pg, uid, "Events processed")[0]["events"] == 48211


# -- JSON structure ------------------------------------------------------------------------------


def test_committed_json_is_what_the_builder_generates() -> None:
    expected = build.render_all()
    assert sorted(expected) == sorted(DASHBOARDS), "dashboard files differ from dashboards.build.DASHBOARDS"
    for name, content in expected.items():
        assert (JSON_DIR / name).read_text(encoding="utf-8") == content, (
            f"{name} is stale: run `python -m dashboards.build`")


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    titles = {d["title"] for d in DASHBOARDS.values()}
    assert titles == {"infersentry — Alert triage", "infersentry — Drift",
                      "infersentry — Data quality & pipeline health"}
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)


def _provisioned_datasource() -> dict[str, Any]:
    doc = yaml.safe_load((PROVISIONING_DIR / "datasources" / "infersentry.yml").read_text())
    (ds,) = doc["datasources"]
    return ds


def test_datasource_provisioning_uses_env_vars() -> None:
    ds = _provisioned_datasource()
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == DATASOURCE_TYPE
    text = (PROVISIONING_DIR / "datasources" / "infersentry.yml").read_text()
    for var in ("INFERSENTRY_PG_HOST", "INFERSENTRY_PG_USER", "INFERSENTRY_PG_PASSWORD", "INFERSENTRY_PG_DB"):
        assert "${" + var + "}" in text
    assert ds["secureJsonData"]["password"] == "${INFERSENTRY_PG_PASSWORD}"


def test_dashboard_provider_points_at_a_folder() -> None:
    doc = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "infersentry.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def _uses_datasource(ds: Mapping[str, Any] | None) -> None:
    assert ds == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    dash = DASHBOARDS[name]
    panels = list(iter_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for p in panels:
        grid = p["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in grid.values())
        assert grid["w"] >= 1 and grid["h"] >= 1 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        cells = {(grid["x"] + i, grid["y"] + j) for i in range(grid["w"]) for j in range(grid["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] in ("row", "text"):
            assert "targets" not in p
            continue
        _uses_datasource(p["datasource"])
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            _uses_datasource(t["datasource"])
            assert t["rawSql"].strip() and t["rawQuery"] is True and t["editorMode"] == "code"
            assert t["format"] in ("table", "time_series")
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            _uses_datasource(var["datasource"])
            assert var["query"] == var["definition"]
    for ann in dash["annotations"]["list"]:
        if not ann.get("builtIn"):
            _uses_datasource(ann["datasource"])
            _uses_datasource(ann["target"]["datasource"])


def test_required_template_variables() -> None:
    def names(name: str) -> set[str]:
        return {v["name"] for v in DASHBOARDS[name]["templating"]["list"]}

    assert {"run", "model", "kind", "status", "alert"} <= names("alert-triage.json")
    assert {"run", "model", "kind", "status", "stat"} <= names("drift.json")
    assert {"run", "model", "status"} <= names("data-quality.json")
    for dash in DASHBOARDS.values():
        run = next(v for v in dash["templating"]["list"] if v["name"] == "run")
        assert not run["multi"] and not run["includeAll"]  # SQL writes '$run'


def test_every_variable_used_in_sql_is_defined_and_single_values_are_quoted() -> None:
    for dash in DASHBOARDS.values():
        defined = {v["name"]: v for v in dash["templating"]["list"]}
        for q in iter_queries(dash):
            for name in re.findall(r"\$\{?(\w+)", q.sql):
                if name.startswith("__"):
                    continue
                assert name in defined, f"{_qid(q)} uses undefined ${name}"
                var = defined[name]
                quoted_in_sql = re.search(rf"'\$\{{?{name}\}}?'", q.sql) is not None
                if var.get("multi") or var.get("includeAll"):
                    assert not quoted_in_sql, f"{_qid(q)}: multi-value ${name} is quoted by Grafana"
                    assert re.search(rf"IN \(\${name}\)", q.sql), f"{_qid(q)}: use IN (${name})"
                else:
                    assert quoted_in_sql, f"{_qid(q)}: single-value ${name} must be written '${name}'"


def test_alert_links_point_at_the_triage_drill_down() -> None:
    triage_vars = {v["name"] for v in DASHBOARDS["alert-triage.json"]["templating"]["list"]}
    links: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = []
    for dash in DASHBOARDS.values():
        for p in iter_panels(dash):
            for o in p.get("fieldConfig", {}).get("overrides", []):
                for prop in o["properties"]:
                    if prop["id"] == "links":
                        links.extend((dash["uid"], p, link) for link in prop["value"])
    assert len(links) >= 5
    for _uid, panel, link in links:
        url = link["url"]
        assert url.startswith(f"/d/{build.TRIAGE_UID}/")
        assert "var-alert=${__data.fields.alert_id}" in url
        for var in re.findall(r"var-(\w+)=", url) + re.findall(r"\$\{(\w+):queryparam\}", url):
            assert var in triage_vars
        columns = _columns_of(panel["targets"][0]["rawSql"])
        assert "alert_id" in columns, f"{panel['title']!r} links on alert_id but does not select it"


def _columns_of(sql: str) -> Sequence[str]:
    return re.findall(r"\b(?:a|r)\.(alert_id)\b", sql)
