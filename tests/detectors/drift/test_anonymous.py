"""Anonymous traffic (no client_id): serial dependence comes from pseudo-callers of consecutive events."""

from __future__ import annotations

import json

import numpy as np

from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from detectors.drift.callers import variance_codes
from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig
from pipeline.engine import Engine
from pipeline.events import FeatureSchema, RawMessage, RouteKey, batch_from_arrays
from pipeline.traffic import encode_message, generate


def test_variance_codes_group_anonymous_runs() -> None:
    codes = np.array([3, -2, -3, 7, -5, -6])
    assert variance_codes(codes, 2).tolist() == [3, -1, -2, 7, -3, -3]


def test_benign_traffic_without_client_ids_stays_quiet() -> None:
    tr = generate("benign", 20_000, seed=5)
    msgs = tr.predictions
    names = tuple(sorted(msgs[0]["features"]))  # type: ignore[arg-type]
    num = [k for k in names if not isinstance(msgs[0]["features"][k], str)]  # type: ignore[index]
    X = np.array([[float(m["features"][k]) for k in num] for m in msgs])  # type: ignore[index]
    schema = FeatureSchema(tuple(num))
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=0))
    found = []
    for i in range(0, len(X), 1000):
        sl = slice(i, i + 1000)
        b = batch_from_arrays(X[sl], prediction=[str(m["prediction"]) for m in msgs[sl]], schema=schema)
        found += [f for f in det.process(b).findings if not f.is_update]
    assert found == [], found[0].explanation["summary"]



def _drift_alerts(msgs: list[dict[str, object]], **params: object) -> list[str]:
    """Summaries of the drift alerts the engine raises on ``msgs`` (drift detector only)."""
    cfg = MonitorConfig(defaults=ModelConfig(detectors={"drift": DetectorSpec(params=dict(params))}))
    raw = [RawMessage("predictions", "p", 0, i, encode_message(m)) for i, m in enumerate(msgs)]
    eng = Engine(cfg, "r")
    alerts = [a for k in range(0, len(raw), 2000) for a in eng.process(raw[k : k + 2000]).alerts]
    return [json.loads(str(a["explanation"]))["summary"] for a in alerts if a["kind"] == "drift"]


def test_anonymous_batch_jobs_among_named_callers_count_as_one_caller() -> None:
    # Interactive users send their client_id, the batch jobs and the health check do not. Each
    # anonymous event used to count as its own caller, so a batch burst with its own class mix
    # filled whole windows: 5 false alarms on this stream (anonymous_share=None keeps that rule).
    tr = generate("benign", 40_000, seed=1)
    silent = set(tr.truth.batch_job_ids) | {tr.truth.canary_id}
    msgs = [{k: v for k, v in m.items() if not (k == "client_id" and v in silent)} for m in tr.predictions]
    assert 0.05 < np.mean(["client_id" not in m for m in msgs]) < 0.5
    assert len(_drift_alerts(msgs, anonymous_share=None)) >= 3
    assert _drift_alerts(msgs) == []

def test_anonymous_caller_is_named_in_the_explanation() -> None:
    # a shift of everyone's feature while anonymous events rose to half the traffic: the alert
    # names the anonymous caller as the window's largest sender
    rng = np.random.default_rng(3)
    n = 12_000
    X = rng.normal(size=(n, 3))
    X[8000:, 0] += 1.0
    anon = rng.uniform(size=n) < np.where(np.arange(n) < 8000, 0.1, 0.5)
    callers = [None if a else f"u{i}" for a, i in zip(anon, rng.integers(0, 400, size=n), strict=True)]
    schema = FeatureSchema(("a", "b", "c"))
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=0))
    out = det.process(batch_from_arrays(X, client_ids=callers, schema=schema))
    found = [f for f in out.findings if not f.is_update]
    assert found and found[0].explanation["top"][0]["stat"] == "feature:a"
    top = found[0].explanation["top_callers"][0]
    assert top["client_id"] is None and top["share"] >= 0.3
    assert "events without client_id made" in found[0].explanation["summary"]
