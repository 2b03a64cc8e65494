"""The Grafana variable and macro expander used to test the dashboards (no database needed)."""

from __future__ import annotations

import pytest

from dashboards.grafana_sql import (
    RenderError,
    TimeRange,
    VarValue,
    format_interval,
    parse_interval,
    render,
    resolve_variables,
)

TR = TimeRange(1700000000.9, 1700003600.2)  # 2023-11-14T22:13:20Z .. 23:13:20Z
VARS = {
    "run": VarValue.single("live"),
    "model": VarValue.multi(["digits", "o'brien"]),
    "alert": VarValue.single("x' OR '1'='1"),
}


def test_unix_epoch_macros_use_integer_seconds_like_grafana() -> None:
    assert render("WHERE $__unixEpochFilter(a.raised_ts)", TR) == (
        "WHERE a.raised_ts >= 1700000000 AND a.raised_ts <= 1700003600")
    assert render("$__unixEpochFrom() .. $__unixEpochTo()", TR) == "1700000000 .. 1700003600"
    assert render("$__unixEpochNanoFilter(t)", TR) == "t >= 1700000000000000000 AND t <= 1700003600000000000"


def test_time_macros_use_rfc3339() -> None:
    assert render("$__timeFilter(to_timestamp(ts))", TR) == (
        "to_timestamp(ts) BETWEEN '2023-11-14T22:13:20Z' AND '2023-11-14T23:13:20Z'")
    assert render("$__timeFrom() $__timeTo()", TR) == "'2023-11-14T22:13:20Z' '2023-11-14T23:13:20Z'"
    assert render("$__time(c), $__timeEpoch(c)", TR) == 'c AS "time", extract(epoch from c) AS "time"'


def test_group_macros_and_interval() -> None:
    assert render("$__unixEpochGroupAlias(f.ts, $__interval)", TR, interval_s=300) == (
        'floor(f.ts/300)*300 AS "time"')
    assert render("$__unixEpochGroup(ts, '1h', NULL)", TR) == "floor(ts/3600)*3600"
    assert render("$__timeGroupAlias(created, 5m)", TR) == 'floor(extract(epoch from created)/300)*300 AS "time"'
    assert render("$__interval_ms $__range_s", TR, interval_s=30) == "30000 3600"
    assert parse_interval("250ms") == 0.25 and parse_interval("2d") == 172800
    assert [format_interval(s) for s in (0.5, 15, 60, 7200, 86400, 90)] == ["500ms", "15s", "1m", "2h", "1d", "90s"]


def test_variables_single_multi_and_formats() -> None:
    assert render("run = '$run' AND model IN ($model)", TR, VARS) == (
        "run = 'live' AND model IN ('digits','o''brien')")
    assert render("'${run}' [[run]] ${model:csv} ${run:singlequote}", TR, VARS) == "'live' live digits,o'brien 'live'"
    # a single-value variable doubles quotes, so '$alert' stays one string literal
    assert render("id = '$alert'", TR, VARS) == "id = 'x'' OR ''1''=''1'"


def test_unknown_names_are_errors() -> None:
    with pytest.raises(RenderError, match="unknown template variable"):
        render("x = '$nope'", TR, VARS)
    with pytest.raises(RenderError, match="unknown macro"):
        render("$__unixEpochFiltr(ts)", TR)
    with pytest.raises(RenderError, match="unknown macro or built-in"):
        render("$__rate_interval", TR)
    with pytest.raises(RenderError, match="takes 1 argument"):
        render("$__unixEpochFilter()", TR)
    with pytest.raises(RenderError, match="unbalanced"):
        render("$__unixEpochFilter(ts", TR)
    with pytest.raises(RenderError, match="not a Grafana interval"):
        render("$__unixEpochGroup(ts, soon)", TR)
    with pytest.raises(ValueError):
        TimeRange(2, 1)


def test_resolve_variables_runs_queries_in_order_and_picks_like_grafana() -> None:
    dash = {"templating": {"list": [
        {"name": "run", "type": "query", "query": "SELECT run FROM runs", "multi": False, "includeAll": False},
        {"name": "model", "type": "query", "query": "SELECT model FROM m WHERE run = '$run'",
         "multi": True, "includeAll": True},
        {"name": "alert", "type": "textbox", "query": "a-1"},
        {"name": "sev", "type": "custom", "query": "critical, warning", "multi": True},
    ]}}
    seen: list[str] = []

    def run_query(sql: str) -> list[tuple[str]]:
        seen.append(sql)
        return [("live",), ("replay",)] if "runs" in sql else [("digits",), ("fraud",)]

    got = resolve_variables(dash, run_query, TR, overrides={"sev": ["warning"]})
    assert seen == ["SELECT run FROM runs", "SELECT model FROM m WHERE run = 'live'"]
    assert got == {
        "run": VarValue(("live",), quoted=False),
        "model": VarValue(("digits", "fraud"), quoted=True),
        "alert": VarValue(("a-1",), quoted=False),
        "sev": VarValue(("warning",), quoted=True),
    }
