"""Run reports and run diffs (``infersentry runs ...``) on real replays, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from pipeline.audit.diff import FieldChange, compare_alerts
from pipeline.config import load_config
from pipeline.replay import replay_file
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.storage.tables import alerts, dead_letters, runs
from pipeline.timefmt import format_ts, parse_ts
from pipeline.traffic import generate, write_jsonl

#: Every config below lists all default detectors: a ``defaults.detectors`` mapping replaces the default set.
DRIFT_CHANGED = """defaults:
  detectors:
    drift: {params: {reference_size: 1500}}
    performance: {}
    outlier: {}
    campaign: {}
    extraction: {}
"""
OUTLIER_OFF = DRIFT_CHANGED.replace("params: {reference_size: 1500}", "params: {}").replace(
    "outlier: {}", "outlier: {enabled: false}")
REPORT_KEYS = ["report_version", "run", "events", "dead_letters", "dead_letters_by_reason", "duplicates",
               "first_event_at", "last_event_at", "first_alert_at", "last_alert_at", "alerts", "by_kind_severity",
               "by_model", "by_status", "reviews_recorded", "top_alerts", "caller_alerts"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """6,000 events with a drift, a campaign, an extraction and an outlier-heavy caller; configs beside."""
    d = tmp_path_factory.mktemp("audit")
    preds, labels = d / "p.jsonl", d / "l.jsonl"
    write_jsonl(generate("mixed", n_events=6000, seed=11), preds, labels)
    lines = preds.read_bytes().splitlines(keepends=True)
    with preds.open("ab") as fh:  # dead letters with two reasons, and two redeliveries
        fh.write(b'{"event_id": "bad", "ts": NaN}\n{"event_id": "x"}\n{"event_id": "y"}\n')
        fh.write(lines[-1] + lines[-7])
    (d / "drift.yml").write_text(DRIFT_CHANGED)
    (d / "outlier-off.yml").write_text(OUTLIER_OFF)
    return preds, labels, d


def _replay(db_url: str, stream: tuple[Path, Path, Path], run: str, config: str | None = None) -> Store:
    preds, labels, d = stream
    store = Store(make_engine(db_url))
    replay_file(store, load_config(d / config if config else None), preds, labels, run)
    return store


def _ids(store: Store, run: str, *where: object) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(alerts.c.alert_id).where(alerts.c.run == run, *where)).scalars())


def _diff(db_url: str, a: str, b: str, cwd: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    r = cli("runs", "diff", a, b, "--format", "json", "--db", db_url, *extra, cwd=cwd)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_diff_of_replays_with_the_same_and_changed_configs(db_url: str, stream: tuple[Path, Path, Path],
                                                           tmp_path: Path) -> None:
    store = _replay(db_url, stream, "a")
    _replay(db_url, stream, "b")
    _replay(db_url, stream, "drift-changed", "drift.yml")
    _replay(db_url, stream, "outlier-off", "outlier-off.yml")

    r = cli("runs", "diff", "a", "b", "--db", db_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    n = len(_ids(store, "a"))
    assert n > 100 and r.stdout.splitlines()[-1] == f"identical alerts ({n} in both)"
    code, d = _diff(db_url, "a", "b", tmp_path)
    assert code == 0 and d["identical"] and d["unchanged"] == n and not d["config_hash_differs"]
    assert d["only_in_a"] == d["only_in_b"] == d["changed"] == d["rekeyed"] == []

    # A drift parameter: the drift alert is the same finding under a new id; every other alert is identical.
    code, d = _diff(db_url, "a", "drift-changed", tmp_path)
    (drift_a,) = _ids(store, "a", alerts.c.kind == "drift")
    (drift_b,) = _ids(store, "drift-changed", alerts.c.kind == "drift")
    (campaign,) = _ids(store, "a", alerts.c.kind == "attack_campaign")
    assert code == 1 and d["config_hash_differs"] and not d["input_fingerprint_differs"]
    assert [(c["alert_id"], c["alert_id_b"]) for c in d["rekeyed"]] == [(drift_a, drift_b)]
    fields = [c["field"] for c in d["rekeyed"][0]["changes"]]
    assert "explanation.config_hash" in fields and "explanation.reference_period" in fields
    assert d["only_in_a"] == d["only_in_b"] == d["changed"] == [] and d["unchanged"] == n - 1
    assert campaign in _ids(store, "drift-changed")
    assert d["verdict"].startswith("1 differ")

    # The outlier detector off: exactly its alerts (outlier and adversarial kinds) are only in A.
    code, d = _diff(db_url, "a", "outlier-off", tmp_path)
    outliers = _ids(store, "a", alerts.c.detector == "outlier")
    assert code == 1 and outliers and {x["alert_id"] for x in d["only_in_a"]} == outliers
    assert d["only_in_b"] == [] and d["unchanged"] == n - len(outliers)
    text = cli("runs", "diff", "a", "outlier-off", "--db", db_url, cwd=tmp_path)
    assert text.returncode == 1 and text.stdout.splitlines()[-1].startswith(f"{len(outliers)} differ")

    # The same alert id with another score: changed, naming the field; a review status is ignored unless asked.
    with store.engine.begin() as conn:
        conn.execute(update(alerts).where(alerts.c.run == "b", alerts.c.alert_id == campaign)
                     .values(score=alerts.c.score + 1))
    rv = cli("alerts", "review", drift_a, "--run", "b", "--status", "confirmed", "--db", db_url, cwd=tmp_path)
    assert rv.returncode == 0, rv.stderr
    code, d = _diff(db_url, "a", "b", tmp_path)
    assert code == 1 and [c["alert_id"] for c in d["changed"]] == [campaign]
    assert [c["field"] for c in d["changed"][0]["changes"]] == ["score"]
    assert d["changed"][0]["changes"][0]["b"] == d["changed"][0]["changes"][0]["a"] + 1
    code, d = _diff(db_url, "a", "b", tmp_path, "--with-status")
    assert {c["alert_id"]: [f["field"] for f in c["changes"]] for c in d["changed"]} == {
        campaign: ["score"], drift_a: ["status"]}

    out = tmp_path / "diff.txt"
    r = cli("runs", "diff", "a", "b", "--out", str(out), "--db", db_url, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "" and "1 differ" in r.stderr and campaign in out.read_text()


def test_report_counts_match_sql_and_are_deterministic(db_url: str, stream: tuple[Path, Path, Path],
                                                       tmp_path: Path) -> None:
    store = _replay(db_url, stream, "audit")
    (campaign,) = _ids(store, "audit", alerts.c.kind == "attack_campaign")
    (drift,) = _ids(store, "audit", alerts.c.kind == "drift")
    for aid, status in ((campaign, "confirmed"), (drift, "false_positive"), (drift, "acknowledged")):
        r = cli("alerts", "review", aid, "--status", status, "--reviewer", "auditor", "--db", db_url, cwd=tmp_path)
        assert r.returncode == 0, r.stderr

    r = cli("runs", "report", "audit", "--format", "json", "--db", db_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert list(rep) == REPORT_KEYS and rep["report_version"] == 1
    with store.engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.run == "audit")).mappings().one()
        total = conn.execute(select(func.count()).where(alerts.c.run == "audit")).scalar_one()
        by_ks = conn.execute(select(alerts.c.kind, alerts.c.severity, func.count()).where(alerts.c.run == "audit")
                             .group_by(alerts.c.kind, alerts.c.severity)).all()
        n_dead = conn.execute(select(func.count()).where(dead_letters.c.run == "audit")).scalar_one()
        callers = conn.execute(select(alerts.c.alert_id, alerts.c.client_id).where(
            alerts.c.run == "audit", alerts.c.kind.in_(["attack_campaign", "extraction"]))).all()
    assert rep["run"]["name"] == "audit" and rep["run"]["config_hash"] == run["config_hash"]
    assert rep["run"]["input_fingerprint"] == run["input_fingerprint"] and rep["run"]["source"] == run["source"]
    assert rep["events"] == run["events"] == 6000
    assert rep["dead_letters"] == n_dead == 3 and sum(rep["dead_letters_by_reason"].values()) == 3
    assert len(rep["dead_letters_by_reason"]) == 2 and rep["duplicates"] == run["duplicates"] == 2
    assert rep["alerts"] == total and sum(rep["by_model"].values()) == total
    assert {(k, s): n for k, sev in rep["by_kind_severity"].items() for s, n in sev.items()} == {
        (k, s): n for k, s, n in by_ks}
    assert rep["by_status"] == {"open": total - 2, "acknowledged": 1, "confirmed": 1, "false_positive": 0,
                                "resolved": 0}
    assert rep["reviews_recorded"] == 3
    assert {(a["alert_id"], a["client_id"]) for a in rep["caller_alerts"]} == {tuple(c) for c in callers}
    assert all(a["client_id"] for a in rep["caller_alerts"])
    top = rep["top_alerts"]
    assert len(top) == 10 and all(a["severity"] == "critical" for a in top) and all(a["summary"] for a in top)
    groups = [(a["kind"], a["model"], a["model_version"], a["client_id"]) for a in top]
    firsts = [i for i, g in enumerate(groups) if g not in groups[:i]]
    assert firsts == list(range(len(firsts)))  # every kind/model/caller once before any repeats
    critical = {(a["kind"], a["model"], a["model_version"], a["client_id"]) for a in store.iter_alerts("audit")
                if a["severity"] == "critical"}
    assert len(firsts) == min(10, len(critical))
    for part in (top[:len(firsts)], top[len(firsts):]):
        assert [a["raised_at"] for a in part] == sorted((a["raised_at"] for a in part), reverse=True)
    scored = [json.loads(line) for line in stream[0].read_text().splitlines()]
    first_ts = min(parse_ts(e["ts"])[0] for e in scored if "model" in e)
    assert rep["first_event_at"] == format_ts(first_ts) == format_ts(run["first_event_ts"])
    assert rep["first_event_at"] < rep["first_alert_at"] <= rep["last_alert_at"] <= rep["last_event_at"]

    for fmt in ("text", "json", "markdown"):
        first, second = tmp_path / f"1.{fmt}", tmp_path / f"2.{fmt}"
        for path in (first, second):
            r = cli("runs", "report", "audit", "--format", fmt, "--out", str(path), "--db", db_url, cwd=tmp_path)
            assert r.returncode == 0 and r.stdout == "", r.stderr
        assert first.read_bytes() == second.read_bytes()
    text = (tmp_path / "1.text").read_text()
    assert "confirmed" in text and campaign in text and f"alerts: {total:,}" in text


def test_runs_list_and_user_errors(db_url: str, stream: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _replay(db_url, stream, "listed")
    r = subprocess.run([sys.executable, "-m", "pipeline", "runs", "list", "--db", db_url], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "listed" in line)
    assert "replay" in row and "finished" in row and "6,000" in row
    for args, needle in [(("runs", "report", "nope"), "no run named 'nope'"),
                         (("runs", "diff", "listed", "nope"), "no run named 'nope'"),
                         (("runs", "report", "listed", "--format", "xml"), "unknown format 'xml'"),
                         (("runs", "diff", "listed", "listed", "--format", "markdown"), "unknown format")]:
        r = cli(*args, "--db", db_url, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


def test_compare_alerts_names_fields_and_explanation_keys() -> None:
    base = {"alert_id": "x", "run": "a", "status": "open", "score": 1.0, "event_ids": ["e1"],
            "explanation": {"summary": "s", "statistic": 1.0}}
    rec = {**{f: None for f in ("kind", "detector", "model", "model_version", "client_id", "raised_at",
                                "trigger_event_id", "window_start", "window_end", "updated_at", "threshold",
                                "severity")}, **base}
    other = {**rec, "run": "b", "status": "confirmed", "window_end": "2026-01-01T00:00:01.000Z",
             "explanation": {"summary": "s", "statistic": 2.0, "new": 1}}
    assert compare_alerts(rec, {**rec, "run": "b", "status": "confirmed"}) == []
    assert compare_alerts(rec, other) == [FieldChange("window_end", None, "2026-01-01T00:00:01.000Z"),
                                          FieldChange("explanation.new", None, 1),
                                          FieldChange("explanation.statistic", 1.0, 2.0)]
    assert FieldChange("status", "open", "confirmed") in compare_alerts(rec, other, with_status=True)
