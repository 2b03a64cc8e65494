"""Build infersentry's Grafana dashboards (JSON) from this one Python source.

Run ``python -m dashboards.build`` after editing; it rewrites ``dashboards/json/``. The JSON is
committed (Grafana provisions it from files); ``tests/dashboards`` checks it is up to date and runs
every query against PostgreSQL.

SQL conventions used below (Grafana's PostgreSQL datasource):

- times are epoch-second float columns, filtered with ``$__unixEpochFilter(col)`` and shown with
  ``to_timestamp(col)`` (a native timestamp, unambiguous for Grafana);
- ``run`` is a single-value variable (SQL writes ``'$run'``), ``model``/``kind``/``status`` are
  multi-value with an All option (SQL writes ``IN ($model)``);
- ``alerts.explanation`` and ``alerts.event_ids`` are JSON text: cast with ``::jsonb``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dashboards import DATASOURCE, JSON_DIR

SCHEMA_VERSION = 39
TRIAGE_UID = "infersentry-triage"
DRIFT_UID = "infersentry-drift"
HEALTH_UID = "infersentry-health"
TRIAGE_URL = f"/d/{TRIAGE_UID}/infersentry-alert-triage"

KINDS = ("drift", "performance", "adversarial", "outlier", "attack_campaign", "extraction", "data_quality")
STATUSES = ("open", "acknowledged", "confirmed", "false_positive", "resolved")
CALLER_KINDS = ("attack_campaign", "extraction")
NO_VALUE = "(none yet)"  # option offered when a variable's query finds nothing (avoids `IN ()`)

# A one-line description of an alert, whatever its detector put in the explanation object.
SUMMARY = (
    "COALESCE(a.explanation::jsonb ->> 'summary', a.explanation::jsonb ->> 'reason', "
    "a.explanation::jsonb ->> 'message', left(a.explanation, 200))"
)
SEVERITY_RANK = "CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END"
# Stream- and caller-level alerts first: one attacker's hundreds of per-event alerts must not push a
# drift or a campaign alert out of a reviewer's table.
SCOPE_RANK = "CASE WHEN a.kind IN ('adversarial', 'outlier') THEN 1 ELSE 0 END"
EVIDENCE_COUNT = (
    "CASE WHEN jsonb_typeof(a.event_ids::jsonb) = 'array' "
    "THEN jsonb_array_length(a.event_ids::jsonb) ELSE 0 END"
)
EVIDENCE_IDS = (
    "jsonb_array_elements_text(CASE WHEN jsonb_typeof(a.event_ids::jsonb) = 'array' "
    "THEN a.event_ids::jsonb ELSE '[]'::jsonb END)"
)


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _values(values: Iterable[str]) -> str:
    return "(VALUES " + ", ".join(f"('{v}')" for v in values) + ")"


# -- panel builders -------------------------------------------------------------------------------


def _target(sql: str, fmt: str = "table", ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": dict(DATASOURCE),
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql.strip(),
    }


def _links_to_alert(column: str = "alert_id") -> dict[str, Any]:
    """Field override: clicking an alert id opens this alert's evidence on the triage dashboard."""
    url = TRIAGE_URL + "?${run:queryparam}&var-alert=${__data.fields." + column + "}&${__url_time_range}"
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [
            {"id": "links", "value": [{"title": "Open this alert's evidence, payloads and review history",
                                        "url": url}]},
            {"id": "custom.width", "value": 190},
        ],
    }


def _colour_map(column: str, colours: Mapping[str, str]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [
            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            {
                "id": "mappings",
                "value": [
                    {
                        "type": "value",
                        "options": {v: {"color": c, "index": i} for i, (v, c) in enumerate(colours.items())},
                    }
                ],
            },
        ],
    }


def _json_cells(*columns: str) -> list[dict[str, Any]]:
    return [
        {
            "matcher": {"id": "byName", "options": c},
            "properties": [{"id": "custom.cellOptions", "value": {"type": "json-view"}}],
        }
        for c in columns
    ]


SEVERITY_COLOURS = {"critical": "red", "warning": "orange", "info": "blue"}
STATUS_COLOURS = {
    "open": "red",
    "acknowledged": "orange",
    "confirmed": "purple",
    "false_positive": "green",
    "resolved": "green",
}


def table(title: str, sql: str, description: str = "", overrides: Sequence[dict[str, Any]] = (),
          w: int = 24, h: int = 9) -> dict[str, Any]:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [_target(sql)],
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "filterable": True, "cellOptions": {"type": "auto"}}},
            "overrides": list(overrides),
        },
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}},
        "_size": (w, h),
    }


def stat(title: str, sql: str, description: str = "", unit: str = "none", w: int = 4, h: int = 4,
         red_from: float | None = None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_from is not None:
        steps.append({"color": "red", "value": red_from})
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [_target(sql)],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "_size": (w, h),
    }


def timeseries(title: str, sql: str | Sequence[str], description: str = "", unit: str = "none",
               w: int = 12, h: int = 8, bars: bool = False, threshold_line: float | None = None,
               stacked: bool = False) -> dict[str, Any]:
    sqls = [sql] if isinstance(sql, str) else list(sql)
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "pointSize": 4,
        "showPoints": "auto",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
    }
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if threshold_line is not None:
        steps.append({"color": "red", "value": threshold_line})
        custom["thresholdsStyle"] = {"mode": "line+area"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [_target(s, "time_series", ref=chr(ord("A") + i)) for i, s in enumerate(sqls)],
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["max", "lastNotNull"],
                       "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "_size": (w, h),
    }


def piechart(title: str, sql: str, description: str = "", w: int = 6, h: int = 8) -> dict[str, Any]:
    return {
        "type": "piechart",
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [_target(sql)],
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
            "pieType": "donut",
            "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"],
                       "showLegend": True},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "_size": (w, h),
    }


def barchart(title: str, sql: str, x_field: str, description: str = "", w: int = 12,
             h: int = 8) -> dict[str, Any]:
    return {
        "type": "barchart",
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [_target(sql)],
        "fieldConfig": {"defaults": {"unit": "none", "custom": {"fillOpacity": 80}}, "overrides": []},
        "options": {
            "xField": x_field,
            "orientation": "horizontal",
            "stacking": "normal",
            "showValue": "auto",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "_size": (w, h),
    }


def text(title: str, markdown: str, w: int = 24, h: int = 6) -> dict[str, Any]:
    return {
        "type": "text",
        "title": title,
        "options": {"mode": "markdown", "content": markdown.strip()},
        "_size": (w, h),
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (24, 1)}


def layout(panels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give panels ids and grid positions: left to right, wrapping at 24 columns; rows start lines."""
    out: list[dict[str, Any]] = []
    x = y = line_h = 0
    for i, panel in enumerate(panels, start=1):
        panel = dict(panel)
        w, h = panel.pop("_size")
        if panel["type"] == "row" or x + w > 24:
            y += line_h
            x = line_h = 0
        panel["id"] = i
        panel["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        line_h = max(line_h, h)
        if panel["type"] == "row":
            x, y, line_h = 0, y + h, 0
        out.append(panel)
    return out


# -- template variables -----------------------------------------------------------------------


def query_var(name: str, label: str, sql: str, multi: bool, description: str = "",
              refresh_on_time: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": dict(DATASOURCE),
        "query": sql.strip(),
        "definition": sql.strip(),
        "refresh": 2 if refresh_on_time else 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "sort": 0,
        "hide": 0,
        "skipUrlSync": False,
    }


def textbox_var(name: str, label: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "textbox",
        "query": "",
        "current": {"selected": False, "text": "", "value": ""},
        "options": [{"selected": True, "text": "", "value": ""}],
        "hide": 0,
        "skipUrlSync": False,
    }


def _never_empty(inner: str) -> str:
    """Options from ``inner`` (one text column), or a placeholder when it finds none.

    An empty multi-value variable would render as ``IN ()``, a syntax error on every panel of a
    fresh installation; the placeholder matches nothing instead.
    """
    return (
        f"SELECT v FROM ({inner}) AS found(v)\n"
        f"UNION ALL SELECT '{NO_VALUE}' WHERE NOT EXISTS ({inner})\n"
        "ORDER BY 1"
    )


RUN_VAR = query_var(
    "run",
    "Run",
    "SELECT run FROM runs ORDER BY (status = 'running') DESC, last_event_ts DESC NULLS LAST, run",
    multi=False,
    description="The live run or a named replay (runs never mix). Running runs come first.",
)


def model_var(multi: bool, alert_kinds: Sequence[str] | None = None) -> dict[str, Any]:
    kind_filter = f" AND kind IN ({_sql_list(alert_kinds)})" if alert_kinds else ""
    inner = (
        f"SELECT model FROM alerts WHERE run = '$run'{kind_filter} "
        "UNION SELECT model FROM window_stats WHERE run = '$run' AND $__unixEpochFilter(window_end)"
    )
    return query_var("model", "Model", _never_empty(inner), multi=multi, refresh_on_time=True,
                     description="Models with alerts in this run, or with window statistics in the time range.")


def kind_var(kinds: Sequence[str] = KINDS) -> dict[str, Any]:
    """The known kinds, plus any other kind found in the run's alerts (when ``kinds`` is all of them)."""
    seen = "SELECT kind FROM alerts WHERE run = '$run'"
    if tuple(kinds) != KINDS:
        seen += f" AND kind IN ({_sql_list(kinds)})"
    sql = f"SELECT k FROM {_values(kinds)} AS known(k)\nUNION {seen}\nORDER BY 1"
    return query_var("kind", "Kind", sql, multi=True, description="Alert kinds (alerts.md).")


STATUS_VAR = query_var(
    "status",
    "Status",
    f"SELECT s FROM {_values(STATUSES)} AS known(s)\nUNION SELECT status FROM alerts WHERE run = '$run'\n"
    "ORDER BY 1",
    multi=True,
    description="Reviewer status: open, acknowledged, confirmed, false_positive, resolved.",
)


def dashboard(uid: str, title: str, description: str, variables: list[dict[str, Any]],
              panels: Sequence[dict[str, Any]], annotations: Sequence[dict[str, Any]] = (),
              time_from: str = "now-7d") -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["infersentry"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "infersentry dashboards",
                "type": "dashboards",
                "tags": ["infersentry"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "url": "",
                "tooltip": "",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *annotations,
            ]
        },
        "templating": {"list": variables},
        "panels": layout(panels),
    }


# -- the triage dashboard -------------------------------------------------------------------------

REVIEW_HELP = """
**Reviewing an alert.** Grafana shows alerts read-only; record your decision with the CLI (it calls
`pipeline.review.set_status`, which updates the alert and appends to its review history in one
transaction):

```
infersentry alerts review ALERT_ID --run RUN --status confirmed --reviewer you --note "why"
```

Statuses: `open` (new) → `acknowledged` (someone is looking) → `confirmed` (real problem) /
`false_positive` (not a problem: tells us to recalibrate) / `resolved` (handled). The *review command*
column of the open-alerts table has the command ready to paste; change `--status` as needed.
Click an **alert_id** to see its evidence (flagged events with their payloads) and its review history
below. A replay never overwrites a reviewer's status.
"""

STATUS_COUNTS = ",\n  ".join(f"count(*) FILTER (WHERE a.status = '{s}') AS \"{s}\"" for s in STATUSES)
ALERT_FILTER = "a.run = '$run' AND a.model IN ($model) AND a.kind IN ($kind)"


def triage() -> dict[str, Any]:
    open_alerts = f"""
SELECT
  to_timestamp(a.raised_ts) AS "raised",
  a.kind,
  a.severity,
  a.model,
  COALESCE(a.model_version, '') AS "version",
  COALESCE(a.client_id, '') AS "client",
  a.score,
  a.threshold,
  a.score / NULLIF(a.threshold, 0) AS "score / threshold",
  a.status,
  COALESCE(a.reviewer, '') AS "reviewer",
  {SUMMARY} AS "summary",
  {EVIDENCE_COUNT} AS "evidence events",
  a.alert_id,
  'infersentry alerts review ' || a.alert_id || ' --run ' || a.run || ' --status confirmed' AS "review command"
FROM alerts a
WHERE {ALERT_FILTER}
  AND a.status IN ('open', 'acknowledged')
ORDER BY {SCOPE_RANK}, {SEVERITY_RANK}, a.raised_ts DESC
LIMIT 500"""
    all_alerts = f"""
SELECT
  to_timestamp(a.raised_ts) AS "raised",
  a.kind, a.severity, a.model,
  COALESCE(a.client_id, '') AS "client",
  a.score, a.threshold, a.status,
  COALESCE(a.reviewer, '') AS "reviewer",
  COALESCE(a.reviewed_at, '') AS "reviewed at",
  COALESCE(a.review_note, '') AS "note",
  {SUMMARY} AS "summary",
  a.alert_id
FROM alerts a
WHERE {ALERT_FILTER} AND a.status IN ($status) AND $__unixEpochFilter(a.raised_ts)
ORDER BY a.raised_ts DESC
LIMIT 1000"""
    selected = f"""
SELECT
  a.alert_id, to_timestamp(a.raised_ts) AS "raised", a.kind, a.detector, a.severity, a.status,
  a.model, COALESCE(a.model_version, '') AS "version", COALESCE(a.client_id, '') AS "client",
  a.score, a.threshold, a.trigger_event_id AS "trigger event",
  COALESCE(a.window_start, '') AS "window start", COALESCE(a.window_end, '') AS "window end",
  COALESCE(a.updated_at, '') AS "updated", a.config_hash AS "config hash",
  {SUMMARY} AS "summary",
  a.explanation
FROM alerts a
WHERE a.run = '$run' AND a.alert_id = '$alert'"""
    evidence = f"""
SELECT
  e.n AS "#",
  e.event_id,
  to_timestamp(f.ts) AS "time",
  COALESCE(f.detector, '') AS "flagged by",
  COALESCE(f.client_id, '') AS "client",
  f.score,
  f.threshold,
  COALESCE(f.reason, 'not stored: only flagged events keep their payload') AS "reason",
  f.payload
FROM alerts a
CROSS JOIN LATERAL {EVIDENCE_IDS} WITH ORDINALITY AS e(event_id, n)
LEFT JOIN flagged_events f ON f.run = a.run AND f.event_id = e.event_id
WHERE a.run = '$run' AND a.alert_id = '$alert'
ORDER BY e.n, f.detector"""
    review_history = """
SELECT r.at AS "reviewed at", r.status, COALESCE(r.reviewer, '') AS "reviewer", COALESCE(r.note, '') AS "note"
FROM alert_reviews r
WHERE r.run = '$run' AND r.alert_id = '$alert'
ORDER BY r.id"""
    counts = f"""
SELECT
  a.kind,
  count(*) FILTER (WHERE a.severity = 'critical') AS "critical",
  count(*) FILTER (WHERE a.severity = 'warning') AS "warning",
  count(*) FILTER (WHERE a.severity = 'info') AS "info"
FROM alerts a
WHERE {ALERT_FILTER} AND a.status IN ($status) AND $__unixEpochFilter(a.raised_ts)
GROUP BY a.kind
ORDER BY a.kind"""
    matrix = f"""
SELECT
  a.kind,
  count(*) AS "alerts",
  {STATUS_COUNTS},
  round(100.0 * count(*) FILTER (WHERE a.status = 'confirmed')
        / NULLIF(count(*) FILTER (WHERE a.status IN ('confirmed', 'false_positive')), 0), 1)
    AS "confirmed % of decided"
FROM alerts a
WHERE {ALERT_FILTER} AND $__unixEpochFilter(a.raised_ts)
GROUP BY a.kind
ORDER BY "alerts" DESC"""
    over_time = f"""
SELECT
  $__unixEpochGroupAlias(a.raised_ts, $__interval),
  a.kind AS "metric",
  count(*) AS "alerts"
FROM alerts a
WHERE {ALERT_FILTER} AND a.status IN ($status) AND $__unixEpochFilter(a.raised_ts)
GROUP BY 1, 2
ORDER BY 1"""
    status_pie = f"""
SELECT a.status, count(*) AS "alerts"
FROM alerts a
WHERE {ALERT_FILTER} AND $__unixEpochFilter(a.raised_ts)
GROUP BY a.status
ORDER BY a.status"""
    reviewers = f"""
SELECT
  COALESCE(a.reviewer, '(not reviewed)') AS "reviewer",
  {STATUS_COUNTS},
  count(*) AS "total"
FROM alerts a
WHERE {ALERT_FILTER} AND $__unixEpochFilter(a.raised_ts)
GROUP BY 1
ORDER BY "total" DESC"""
    recent_reviews = """
SELECT
  r.at AS "reviewed at", r.status, COALESCE(r.reviewer, '') AS "reviewer", COALESCE(r.note, '') AS "note",
  a.kind, a.model, COALESCE(a.client_id, '') AS "client", r.alert_id
FROM alert_reviews r
JOIN alerts a ON a.run = r.run AND a.alert_id = r.alert_id
WHERE r.run = '$run' AND a.model IN ($model) AND a.kind IN ($kind)
ORDER BY r.id DESC
LIMIT 200"""
    campaigns = f"""
SELECT
  COALESCE(a.client_id, '(unknown)') AS "caller",
  a.kind,
  a.model,
  a.severity,
  a.status,
  to_timestamp(a.raised_ts) AS "raised",
  COALESCE(a.window_start, '') AS "first suspicious query",
  COALESCE(a.window_end, '') AS "last evidence",
  a.score,
  a.threshold,
  {EVIDENCE_COUNT} AS "evidence ids",
  count(DISTINCT f.event_id) AS "flagged events stored",
  max(f.score) AS "max event score",
  COALESCE(string_agg(DISTINCT f.detector, ', '), '') AS "flagged by",
  {SUMMARY} AS "summary",
  a.alert_id
FROM alerts a
LEFT JOIN LATERAL {EVIDENCE_IDS} AS e(event_id) ON true
LEFT JOIN flagged_events f ON f.run = a.run AND f.event_id = e.event_id
WHERE a.run = '$run' AND a.kind IN ({_sql_list(CALLER_KINDS)}) AND a.model IN ($model)
  AND a.status IN ($status) AND $__unixEpochFilter(a.raised_ts)
GROUP BY a.run, a.alert_id
ORDER BY {SCOPE_RANK}, {SEVERITY_RANK}, a.raised_ts DESC
LIMIT 200"""
    campaign_evidence = f"""
SELECT
  to_timestamp(f.ts) AS "time",
  COALESCE(a.client_id, '(unknown)') AS "caller",
  a.kind,
  f.event_id,
  f.detector AS "flagged by",
  f.score,
  f.threshold,
  f.reason,
  f.payload,
  a.alert_id
FROM alerts a
CROSS JOIN LATERAL {EVIDENCE_IDS} AS e(event_id)
JOIN flagged_events f ON f.run = a.run AND f.event_id = e.event_id
WHERE a.run = '$run' AND a.kind IN ({_sql_list(CALLER_KINDS)}) AND a.model IN ($model)
  AND a.status IN ($status) AND $__unixEpochFilter(a.raised_ts)
ORDER BY "caller", f.ts, f.event_id
LIMIT 1000"""
    top_callers = """
SELECT
  COALESCE(f.client_id, '(none)') AS "caller",
  count(*) AS "flagged events",
  count(DISTINCT f.detector) AS "detectors",
  to_timestamp(min(f.ts)) AS "first",
  to_timestamp(max(f.ts)) AS "last",
  max(f.score) AS "max score"
FROM flagged_events f
WHERE f.run = '$run' AND f.model IN ($model) AND $__unixEpochFilter(f.ts)
GROUP BY 1
ORDER BY 2 DESC
LIMIT 50"""
    flagged_over_time = """
SELECT
  $__unixEpochGroupAlias(f.ts, $__interval),
  f.detector AS "metric",
  count(*) AS "flagged events"
FROM flagged_events f
WHERE f.run = '$run' AND f.model IN ($model) AND $__unixEpochFilter(f.ts)
GROUP BY 1, 2
ORDER BY 1"""

    alert_overrides = [
        _links_to_alert(),
        _colour_map("severity", SEVERITY_COLOURS),
        _colour_map("status", STATUS_COLOURS),
    ]
    ratio_override = {
        "matcher": {"id": "byName", "options": "score / threshold"},
        "properties": [
            {"id": "decimals", "value": 2},
            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "orange", "value": 1}, {"color": "red", "value": 2}]}},
        ],
    }
    panels = [
        stat("Open alerts", f"SELECT count(*) AS \"open\" FROM alerts a WHERE {ALERT_FILTER} "
             "AND a.status = 'open'", "Alerts nobody has looked at yet (any time).", red_from=1),
        stat("Critical, not yet decided", f"SELECT count(*) AS \"critical\" FROM alerts a WHERE {ALERT_FILTER} "
             "AND a.severity = 'critical' AND a.status IN ('open', 'acknowledged')", red_from=1),
        stat("Acknowledged", f"SELECT count(*) AS \"acknowledged\" FROM alerts a WHERE {ALERT_FILTER} "
             "AND a.status = 'acknowledged'"),
        stat("Alerts raised in range", f"SELECT count(*) AS \"raised\" FROM alerts a WHERE {ALERT_FILTER} "
             "AND a.status IN ($status) AND $__unixEpochFilter(a.raised_ts)"),
        stat("Flagged events in range", "SELECT count(*) AS \"flagged\" FROM flagged_events f "
             "WHERE f.run = '$run' AND f.model IN ($model) AND $__unixEpochFilter(f.ts)"),
        stat("Confirmed % of decided (range)",
             f"SELECT round(100.0 * count(*) FILTER (WHERE a.status = 'confirmed') / NULLIF(count(*) "
             f"FILTER (WHERE a.status IN ('confirmed', 'false_positive')), 0), 1) AS \"confirmed %\" "
             f"FROM alerts a WHERE {ALERT_FILTER} AND $__unixEpochFilter(a.raised_ts)",
             "Share of reviewed-and-decided alerts that reviewers confirmed as real.", unit="percent"),
        table("Open alerts (open + acknowledged, any time)", open_alerts,
              "Everything still waiting for a decision, most severe first, regardless of the time picker. "
              "Click an alert_id for its evidence. Score ÷ threshold above 1 means the threshold was crossed.",
              overrides=[*alert_overrides, ratio_override], h=11),
        text("How to review", REVIEW_HELP, w=24, h=7),
        row("Selected alert: set the 'Alert id' variable or click an alert_id"),
        table("Selected alert", selected, "The alert chosen in the 'Alert id' box (or by clicking an alert_id).",
              overrides=_json_cells("explanation"), h=5),
        table("Evidence of the selected alert: flagged events and payloads", evidence,
              "Every event id in the alert's evidence, in order, with the flagged-event record and the payload "
              "as received. Events that were never flagged (e.g. a drift trigger) have no stored payload.",
              overrides=_json_cells("payload"), w=16, h=10),
        table("Review history of the selected alert", review_history, w=8, h=10),
        row("Overview"),
        timeseries("Alerts over time by kind", over_time, bars=True, stacked=True, w=12),
        barchart("Alerts by kind and severity", counts, x_field="kind", w=12),
        table("Alerts by kind and reviewer status", matrix,
              "Confirmed % of decided = confirmed ÷ (confirmed + false_positive): how often an alert of this "
              "kind was real.", w=14, h=7),
        piechart("Reviewer status breakdown", status_pie, w=10, h=7),
        table("Reviewers", reviewers, "Latest reviewer of each alert, by status.", w=12, h=8),
        table("Recent reviews", recent_reviews, "The review log (alert_reviews), newest first.",
              overrides=[_links_to_alert()], w=12, h=8),
        table("All alerts in range (status filter applies)", all_alerts, overrides=alert_overrides, h=10),
        row("Attack campaigns per caller"),
        table("Attack campaigns and extraction, per caller", campaigns,
              "Per-caller alerts with their evidence joined from flagged_events: how many of the evidence "
              "events are stored, their highest score, and which detectors flagged them.",
              overrides=alert_overrides, h=9),
        table("Campaign evidence: the callers' flagged queries", campaign_evidence,
              overrides=[_links_to_alert(), *_json_cells("payload")], h=10),
        table("Top callers by flagged events", top_callers,
              "Callers with the most flagged events in range, whether or not an alert was raised yet.", w=10),
        timeseries("Flagged events over time by detector", flagged_over_time, bars=True, stacked=True, w=14,
                   h=9),
    ]
    variables = [
        RUN_VAR,
        model_var(multi=True),
        kind_var(),
        STATUS_VAR,
        textbox_var("alert", "Alert id", "An alert id to inspect (clicking an alert_id fills it in)."),
    ]
    return dashboard(
        TRIAGE_UID,
        "infersentry — Alert triage",
        "Open alerts, their evidence and reviewer status; attack campaigns per caller.",
        variables,
        panels,
    )


# -- the drift dashboard --------------------------------------------------------------------------

SERIES = (
    "concat_ws(' · ', ws.stat, NULLIF('v' || ws.model_version, 'v'), 'p' || ws.partition::text, ws.detector)"
)
WS_FILTER = (
    "ws.run = '$run' AND ws.model = '$model' AND ws.stat IN ($stat) AND $__unixEpochFilter(ws.window_end)"
)
DRIFT_ALERT_FILTER = (
    "a.run = '$run' AND a.model = '$model' AND a.kind IN ($kind) AND a.status IN ($status)"
)


def drift() -> dict[str, Any]:
    ratio = f"""
SELECT to_timestamp(ws.window_end) AS "time", {SERIES} AS "metric", ws.score / NULLIF(ws.threshold, 0) AS "score / threshold"
FROM window_stats ws
WHERE {WS_FILTER} AND ws.score IS NOT NULL
ORDER BY 1"""
    score = f"""
SELECT to_timestamp(ws.window_end) AS "time", {SERIES} || ' score' AS "metric", ws.score AS "value"
FROM window_stats ws
WHERE {WS_FILTER} AND ws.score IS NOT NULL
UNION ALL
SELECT to_timestamp(ws.window_end), {SERIES} || ' threshold', ws.threshold
FROM window_stats ws
WHERE {WS_FILTER} AND ws.threshold IS NOT NULL
ORDER BY 1"""

    def series(column: str) -> str:
        return f"""
SELECT to_timestamp(ws.window_end) AS "time", {SERIES} AS "metric", ws.{column} AS "{column}"
FROM window_stats ws
WHERE {WS_FILTER} AND ws.{column} IS NOT NULL
ORDER BY 1"""

    latest = f"""
SELECT DISTINCT ON (ws.detector, ws.stat, ws.model_version, ws.partition)
  ws.stat,
  ws.detector,
  NULLIF(ws.model_version, '') AS "version",
  ws.partition,
  ws.window AS "window #",
  to_timestamp(ws.window_start) AS "window start",
  to_timestamp(ws.window_end) AS "window end",
  ws.n,
  ws.location,
  ws.spread,
  ws.score,
  ws.threshold,
  ws.score / NULLIF(ws.threshold, 0) AS "score / threshold"
FROM window_stats ws
WHERE {WS_FILTER}
ORDER BY ws.detector, ws.stat, ws.model_version, ws.partition, ws.window_end DESC"""
    drift_alerts = f"""
SELECT
  to_timestamp(a.raised_ts) AS "raised",
  a.kind, a.severity, a.status, a.detector,
  COALESCE(a.window_start, '') AS "window start",
  COALESCE(a.window_end, '') AS "window end",
  a.score, a.threshold,
  {SUMMARY} AS "summary",
  a.alert_id
FROM alerts a
WHERE {DRIFT_ALERT_FILTER} AND $__unixEpochFilter(a.raised_ts)
ORDER BY a.raised_ts DESC
LIMIT 500"""
    annotation_sql = f"""
SELECT
  to_timestamp(a.raised_ts) AS "time",
  to_timestamp(GREATEST(a.raised_ts, COALESCE(a.window_end_ts, a.raised_ts))) AS "timeend",
  a.kind || ' (' || a.severity || ', ' || a.status || '): ' || {SUMMARY} AS "text",
  a.kind || ',' || a.severity || ',' || a.status AS "tags"
FROM alerts a
WHERE {DRIFT_ALERT_FILTER} AND $__unixEpochFilter(a.raised_ts)
ORDER BY 1"""
    annotation = {
        "name": "Drift and performance alerts",
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "datasource": dict(DATASOURCE),
        "target": _target(annotation_sql, ref="Anno"),
    }
    stat_var = query_var(
        "stat",
        "Statistic",
        _never_empty(
            "SELECT DISTINCT stat FROM window_stats WHERE run = '$run' AND model = '$model' "
            "AND $__unixEpochFilter(window_end)"
        ),
        multi=True,
        refresh_on_time=True,
        description="Per-window statistics of the selected model (e.g. feature:f3, confidence).",
    )
    panels = [
        timeseries("Score ÷ threshold per statistic (above 1 = over threshold)", ratio, threshold_line=1.0,
                   w=24, h=9,
                   description="Each detector statistic's score divided by its threshold, per window. "
                               "Red area: the threshold was crossed. Drift alerts are annotations."),
        timeseries("Score and threshold", score, w=12),
        timeseries("Window size (events per window)", series("n"), w=12),
        timeseries("Location per statistic", series("location"), w=12,
                   description="The window's location estimate (e.g. mean) of each statistic."),
        timeseries("Spread per statistic", series("spread"), w=12,
                   description="The window's spread estimate (e.g. standard deviation) of each statistic."),
        table("Latest window per statistic", latest, overrides=[{
            "matcher": {"id": "byName", "options": "score / threshold"},
            "properties": [
                {"id": "decimals", "value": 2},
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                    {"color": "green", "value": None}, {"color": "red", "value": 1}]}},
            ],
        }], h=9),
        table("Drift and performance alerts of this model", drift_alerts,
              overrides=[_links_to_alert(), _colour_map("severity", SEVERITY_COLOURS),
                         _colour_map("status", STATUS_COLOURS)], h=8),
    ]
    variables = [RUN_VAR, model_var(multi=False), stat_var, kind_var(("drift", "performance")), STATUS_VAR]
    return dashboard(
        DRIFT_UID,
        "infersentry — Drift",
        "Per-window statistics (location, spread, score vs threshold) of one model; drift alerts as annotations.",
        variables,
        panels,
        annotations=[annotation],
    )


# -- the data quality & pipeline health dashboard ------------------------------------------------

REASON_CLASS = "left(split_part(d.reason, ':', 1), 80)"


def health() -> dict[str, Any]:
    dl_over_time = f"""
SELECT
  $__unixEpochGroupAlias(d.event_time_ts, $__interval),
  {REASON_CLASS} AS "metric",
  count(*) AS "dead letters"
FROM dead_letters d
WHERE d.run = '$run' AND $__unixEpochFilter(d.event_time_ts)
GROUP BY 1, 2
ORDER BY 1"""
    dl_reasons = f"""
SELECT
  {REASON_CLASS} AS "reason",
  d.stream,
  count(*) AS "dead letters",
  to_timestamp(min(d.event_time_ts)) AS "first",
  to_timestamp(max(d.event_time_ts)) AS "last",
  min(d.reason) AS "example reason"
FROM dead_letters d
WHERE d.run = '$run' AND (d.event_time_ts IS NULL OR $__unixEpochFilter(d.event_time_ts))
GROUP BY 1, 2
ORDER BY 3 DESC"""
    dl_recent = """
SELECT
  to_timestamp(d.event_time_ts) AS "stream time",
  d.stream,
  d.source,
  d.partition,
  d.position,
  d.reason,
  d.raw_preview AS "raw (preview)"
FROM dead_letters d
WHERE d.run = '$run' AND (d.event_time_ts IS NULL OR $__unixEpochFilter(d.event_time_ts))
ORDER BY d.event_time_ts DESC NULLS FIRST, d.source, d.partition, d.position DESC
LIMIT 500"""
    runs = """
SELECT
  r.run,
  r.kind,
  r.status,
  r.events,
  r.dead_letters AS "dead letters",
  round(100.0 * r.dead_letters / NULLIF(r.events + r.dead_letters, 0), 3) AS "dead letters %",
  to_timestamp(r.first_event_ts) AS "first event",
  to_timestamp(r.last_event_ts) AS "last event",
  COALESCE(r.started_at, '') AS "started",
  COALESCE(r.finished_at, '') AS "finished",
  r.version,
  r.config_hash AS "config hash",
  r.source
FROM runs r
ORDER BY (r.status = 'running') DESC, r.last_event_ts DESC NULLS LAST, r.run
LIMIT 200"""
    dq_alerts = f"""
SELECT
  to_timestamp(a.raised_ts) AS "raised",
  a.severity, a.status, a.model, a.detector,
  a.score, a.threshold,
  {SUMMARY} AS "summary",
  a.alert_id
FROM alerts a
WHERE a.run = '$run' AND a.kind = 'data_quality' AND a.model IN ($model) AND a.status IN ($status)
  AND $__unixEpochFilter(a.raised_ts)
ORDER BY a.raised_ts DESC
LIMIT 500"""
    checkpoints = """
SELECT
  c.scope,
  c.events,
  to_timestamp(c.last_event_ts) AS "last event",
  max(c.last_event_ts) OVER () - c.last_event_ts AS "behind newest scope",
  extract(epoch FROM now()) - c.last_event_ts AS "event-time age",
  COALESCE(c.saved_at, '') AS "saved at",
  c.state_format AS "state format",
  c.positions
FROM checkpoints c
WHERE c.run = '$run'
ORDER BY c.scope"""
    windows = """
SELECT
  $__unixEpochGroupAlias(ws.window_end, $__interval),
  ws.model AS "metric",
  count(*) AS "window statistics"
FROM window_stats ws
WHERE ws.run = '$run' AND ws.model IN ($model) AND $__unixEpochFilter(ws.window_end)
GROUP BY 1, 2
ORDER BY 1"""
    seconds = {
        "matcher": {"id": "byRegexp", "options": "behind newest scope|event-time age"},
        "properties": [{"id": "unit", "value": "s"}, {"id": "decimals", "value": 1}],
    }
    panels = [
        stat("Run status", "SELECT status FROM runs WHERE run = '$run'", w=4),
        stat("Events processed", "SELECT events FROM runs WHERE run = '$run'", w=4),
        stat("Dead letters (run)", "SELECT dead_letters AS \"dead letters\" FROM runs WHERE run = '$run'",
             w=4, red_from=1),
        stat("Dead letters per 100 messages",
             "SELECT round(100.0 * dead_letters / NULLIF(events + dead_letters, 0), 3) AS \"dead letters %\" "
             "FROM runs WHERE run = '$run'", unit="percent", w=4, red_from=1),
        stat("Open data-quality alerts",
             "SELECT count(*) AS \"open\" FROM alerts a WHERE a.run = '$run' AND a.kind = 'data_quality' "
             "AND a.model IN ($model) AND a.status = 'open'", w=4, red_from=1),
        stat("Event-time age of newest checkpoint",
             "SELECT extract(epoch FROM now()) - max(last_event_ts) AS \"age\" FROM checkpoints "
             "WHERE run = '$run'",
             "Wall clock minus the newest checkpointed event time: a lag proxy for a live run "
             "(meaningless for replays of old data).", unit="s", w=4),
        timeseries("Dead letters over time, by reason", dl_over_time, bars=True, stacked=True, w=14, h=8,
                   description="By the event time of the stream when the message arrived; messages that "
                               "arrived before any valid event have no time and only appear in the tables."),
        table("Dead letters by reason", dl_reasons, w=10, h=8),
        table("Recent dead letters", dl_recent,
              "The raw message is kept in full in dead_letters.raw; this shows its first bytes.", h=9),
        table("Data-quality alerts", dq_alerts,
              overrides=[_links_to_alert(), _colour_map("severity", SEVERITY_COLOURS),
                         _colour_map("status", STATUS_COLOURS)], h=8),
        table("Runs", runs, "Every run (live and replays): events, dead letters, status.", h=8),
        table("Checkpoints of this run", checkpoints,
              "Last checkpointed event time per scope (partition). 'Behind newest scope' shows a partition "
              "lagging the others; 'event-time age' is wall clock minus the checkpointed event time.",
              overrides=[seconds, *_json_cells("positions")], w=14, h=8),
        timeseries("Window statistics written, per model", windows, bars=True, w=10, h=8,
                   description="Detectors are alive and writing: window statistics per time bucket."),
    ]
    variables = [RUN_VAR, model_var(multi=True), STATUS_VAR]
    return dashboard(
        HEALTH_UID,
        "infersentry — Data quality & pipeline health",
        "Dead letters and their reasons, runs, data-quality alerts, checkpoints.",
        variables,
        panels,
    )


# -- output ---------------------------------------------------------------------------------------

DASHBOARDS = {
    "alert-triage.json": triage,
    "drift.json": drift,
    "data-quality.json": health,
}


def render_all() -> dict[str, str]:
    """File name → JSON text (deterministic: sorted keys, two-space indent, trailing newline)."""
    return {name: json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}


def main(out_dir: Path = JSON_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in render_all().items():
        (out_dir / name).write_text(content, encoding="utf-8")
        print(f"wrote {out_dir / name}")


if __name__ == "__main__":
    main()
