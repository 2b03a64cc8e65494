"""Realistic rows for every table, used by the dashboard tests (see ``seed``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from dashboards.grafana_sql import TimeRange
from pipeline import review
from pipeline.storage.tables import (
    alerts,
    checkpoints,
    dead_letters,
    flagged_events,
    runs,
    window_stats,
)

T0 = 1795674814.12  # 2026-11-26T06:33:34.120Z: "now" in the seeded data
TIME_RANGE = TimeRange(T0 - 6 * 3600, T0 + 3600)
LIVE, REPLAY = "live", "replay-2026-11"


def _rfc3339(ts: float) -> str:
    d = datetime.fromtimestamp(ts, tz=UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _payload(event_id: str, ts: float, client: str, features: list[float], prediction: str) -> str:
    return json.dumps({
        "event_id": event_id, "ts": _rfc3339(ts), "model": "digits", "model_version": "3",
        "client_id": client, "features": features, "prediction": prediction,
        "probabilities": {prediction: 0.51, "1": 0.49},
    })


def _alert(run: str, alert_id: str, kind: str, severity: str, raised_ts: float, *, model: str = "digits",
           detector: str, client: str | None = None, event_ids: list[str], score: float,
           threshold: float | None, explanation: dict[str, Any], window: tuple[float, float] | None = None
           ) -> dict[str, Any]:
    return {
        "run": run, "alert_id": alert_id, "kind": kind, "detector": detector, "model": model,
        "model_version": "3", "partition": 0, "client_id": client,
        "raised_at": _rfc3339(raised_ts), "raised_ts": raised_ts, "trigger_event_id": event_ids[-1],
        "window_start": _rfc3339(window[0]) if window else None,
        "window_end": _rfc3339(window[1]) if window else None,
        "window_end_ts": window[1] if window else None,
        "updated_at": None, "event_ids": json.dumps(event_ids), "score": score, "threshold": threshold,
        "severity": severity, "status": "open", "explanation": json.dumps(explanation),
        "config_hash": "9e3b1c0d5a7f2e41",
    }


def seed(engine: Engine) -> None:
    """Two runs; alerts of several kinds and statuses; their evidence; window statistics; dead
    letters; checkpoints. Statuses are set through :mod:`pipeline.review` like a reviewer would."""
    alert_rows = [
        _alert(LIVE, "a-drift-1", "drift", "warning", T0 - 3600, detector="ks_window",
               event_ids=["ev-100"], score=0.31, threshold=0.12, window=(T0 - 5400, T0 - 1800),
               explanation={"summary": "feature f3 shifted (KS 0.31 > 0.12)",
                            "features": [{"name": "f3", "statistic": 0.31}], "window": 500}),
        _alert(LIVE, "a-camp-1", "attack_campaign", "critical", T0 - 1200, detector="query_probe",
               client="acct-66", event_ids=["ev-1", "ev-2", "ev-3"], score=14.2, threshold=9.0,
               window=(T0 - 1500, T0 - 1200),
               explanation={"summary": "acct-66 probed the decision boundary (3 low-margin queries)"}),
        _alert(LIVE, "a-adv-1", "adversarial", "warning", T0 - 1300, detector="adv_margin",
               client="acct-66", event_ids=["ev-3"], score=4.1, threshold=3.5,
               explanation={"summary": "prediction margin 0.02 at a dense region"}),
        _alert(LIVE, "a-dq-1", "data_quality", "info", T0 - 2000, detector="dead_letter_rate",
               event_ids=["ev-99"], score=0.02, threshold=0.01,
               explanation={"reason": "dead-letter surge: 2 in 60 s"}),
        _alert(LIVE, "a-ext-1", "extraction", "warning", T0 - 900, model="fraud",
               detector="extraction_rate", client="acct-99", event_ids=["ev-4"], score=2.5, threshold=2.0,
               explanation={"summary": "acct-99 queried uniformly at random"}),
        _alert(LIVE, "a-outlier-old", "outlier", "info", T0 - 30 * 86400, detector="hst",
               event_ids=["ev-0"], score=0.97, threshold=0.95, explanation={"top_features": ["f1"]}),
        _alert(REPLAY, "a-drift-1", "drift", "warning", T0 - 3600, detector="ks_window",
               event_ids=["ev-100"], score=0.31, threshold=0.12,
               explanation={"summary": "feature f3 shifted (KS 0.31 > 0.12)"}),
    ]
    flagged = [
        ("ev-1", "query_probe", "acct-66", T0 - 1500, 11.0, "low margin query near the boundary"),
        ("ev-2", "query_probe", "acct-66", T0 - 1350, 12.5, "low margin query near the boundary"),
        ("ev-3", "query_probe", "acct-66", T0 - 1300, 14.2, "low margin query near the boundary"),
        ("ev-3", "adv_margin", "acct-66", T0 - 1300, 4.1, "margin 0.02 below 0.05"),
        ("ev-4", "extraction_rate", "acct-99", T0 - 900, 2.5, "uniform random query"),
    ]
    flagged_rows = [
        {"run": LIVE, "event_id": eid, "detector": det, "model": "fraud" if eid == "ev-4" else "digits",
         "model_version": "3", "partition": 0, "client_id": client, "ts": ts, "score": score,
         "threshold": 9.0 if det == "query_probe" else 2.0, "reason": reason,
         "payload": _payload(eid, ts, client, [0.1, 0.49, 0.51], "7")}
        for eid, det, client, ts, score, reason in flagged
    ]
    stats_rows: list[dict[str, Any]] = []
    for w in range(6):
        end = T0 - (5 - w) * 900
        for stat_name, base, thr in (("feature:f3", 0.05, 0.12), ("confidence", 0.02, 0.08)):
            score = base if w < 4 else base + 0.26
            stats_rows.append({
                "run": LIVE, "model": "digits", "model_version": "3", "partition": 0,
                "detector": "ks_window", "stat": stat_name, "window": w, "window_start": end - 900,
                "window_end": end, "n": 500, "location": 0.4 + 0.01 * w, "spread": 0.1, "score": score,
                "threshold": thr,
            })
    stats_rows.append({**stats_rows[0], "run": REPLAY})
    dead = [
        {"run": LIVE, "source": "predictions", "partition": 0, "position": 1041, "stream": "predictions",
         "reason": "malformed JSON: Expecting value: line 1 column 1", "raw": b"\xff{not json",
         "raw_preview": "\ufffd{not json", "event_time_ts": T0 - 2000},
        {"run": LIVE, "source": "predictions", "partition": 0, "position": 1042, "stream": "predictions",
         "reason": "schema: missing required field 'ts'", "raw": b'{"event_id": "x1"}',
         "raw_preview": '{"event_id": "x1"}', "event_time_ts": T0 - 1999},
        {"run": LIVE, "source": "labels", "partition": 1, "position": 7, "stream": "labels",
         "reason": "schema: label without event_id", "raw": b'{"label": 3}', "raw_preview": '{"label": 3}',
         "event_time_ts": None},
    ]
    run_rows: list[dict[str, Any]] = [
        {"run": LIVE, "kind": "live", "source": "kafka:predictions,labels", "input_fingerprint": None,
         "config_hash": "9e3b1c0d5a7f2e41", "config_json": "{}", "version": "0.1.0", "status": "running",
         "events": 48211, "dead_letters": 3, "first_event_ts": T0 - 86400, "last_event_ts": T0 - 5,
         "started_at": "2026-11-25T06:30:00.000Z", "finished_at": None},
        {"run": REPLAY, "kind": "replay", "source": "predictions-2026-11.jsonl.gz",
         "input_fingerprint": "5d41402abc4b2a76", "config_hash": "9e3b1c0d5a7f2e41", "config_json": "{}",
         "version": "0.1.0", "status": "finished", "events": 100000, "dead_letters": 0,
         "first_event_ts": T0 - 7200, "last_event_ts": T0 - 3000,
         "started_at": "2026-11-26T05:00:00.000Z", "finished_at": "2026-11-26T05:02:11.000Z"},
    ]
    checkpoint_rows = [
        {"run": LIVE, "scope": f"partition-{p}", "positions": json.dumps({f"predictions:{p}": 24000 + p}),
         "state": b"\x00state", "state_format": "npz-v1", "events": 24000 + p, "last_event_ts": last,
         "saved_at": "2026-11-26T06:33:40.000Z"}
        for p, last in ((0, T0 - 5), (1, T0 - 65))
    ]
    with engine.begin() as conn:
        conn.execute(runs.insert(), run_rows)
        conn.execute(alerts.insert(), alert_rows)
        conn.execute(flagged_events.insert(), flagged_rows)
        conn.execute(window_stats.insert(), stats_rows)
        conn.execute(dead_letters.insert(), dead)
        conn.execute(checkpoints.insert(), checkpoint_rows)
    review.set_status(engine, LIVE, "a-adv-1", "acknowledged", reviewer="alice")
    review.set_status(engine, LIVE, "a-adv-1", "resolved", reviewer="alice", note="blocked acct-66")
    review.set_status(engine, LIVE, "a-dq-1", "acknowledged", reviewer="bob")
    review.set_status(engine, LIVE, "a-camp-1", "acknowledged", reviewer="dave", note="checking acct-66")
    review.set_status(engine, LIVE, "a-ext-1", "false_positive", reviewer="carol", note="load test")
