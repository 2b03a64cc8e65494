"""A route called by a few services only: its drift windows are never tested, and it says so once."""

from __future__ import annotations

import json

import numpy as np

from detectors.base import DetectorContext, Kind
from detectors.drift import DriftDetector
from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig
from pipeline.engine import Engine
from pipeline.events import FeatureSchema, RawMessage, RouteKey, batch_from_arrays
from pipeline.traffic import encode_message

D = 8
SCHEMA = FeatureSchema(tuple(f"f{i}" for i in range(D)), from_array=True)
N, SHIFT_AT = 12_000, 8_000


def _stream(n_callers: int) -> tuple[np.ndarray, list[str | None]]:
    """Callers drawn uniformly from ``n_callers`` service names; f0 moves by 1 sd at ``SHIFT_AT``."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D))
    X[SHIFT_AT:, 0] += 1.0
    return X, [f"svc{i}" for i in rng.integers(0, n_callers, size=N)]


def _findings(det: DriftDetector, X: np.ndarray, callers: list[str | None], cut: int = 1000) -> list:  # type: ignore[type-arg]
    out = []
    for i in range(0, N, cut):
        b = batch_from_arrays(X[i : i + cut], schema=SCHEMA, client_ids=callers[i : i + cut], start_index=i)
        out += det.process(b).findings
    return out


def _detector() -> DriftDetector:
    return DriftDetector(DetectorContext(RouteKey("m", "1"), SCHEMA, seed=0), calibration_events=20_000)


def test_few_callers_get_one_notice_and_no_drift_test() -> None:
    X, callers = _stream(5)
    found = _findings(_detector(), X, callers)
    notices = [f for f in found if f.kind == Kind.DATA_QUALITY]
    assert [f for f in found if f.kind == Kind.DRIFT] == []  # even a 1-sd shift: the windows are not tested
    assert len(notices) == 1
    n = notices[0]
    # the reference holds the first 2,000 events; the 1,000-event window is complete 1,000 events later,
    # and 20 untested closes (one window's worth) follow
    assert n.trigger_event_id == "e3949" and n.detector == "drift.coverage"
    assert n.score < n.threshold == 20.0
    assert n.explanation["effective_callers"]["1000"] == n.score
    assert {c["client_id"] for c in n.explanation["top_callers"]} <= {f"svc{i}" for i in range(5)}
    assert "drift tests inactive" in n.explanation["summary"] and "client_id" in n.explanation["summary"]


def test_enough_callers_no_notice_and_the_shift_is_found() -> None:
    X, callers = _stream(100)
    found = _findings(_detector(), X, callers)
    assert [f for f in found if f.kind == Kind.DATA_QUALITY] == []
    drift = [f for f in found if f.kind == Kind.DRIFT and not f.is_update]
    assert drift and int(drift[0].trigger_event_id[1:]) >= SHIFT_AT


def test_the_notice_survives_a_restart_and_a_different_cut() -> None:
    X, callers = _stream(5)
    whole = [f.trigger_event_id for f in _findings(_detector(), X, callers, cut=700)]
    a = _detector()
    head = [f.trigger_event_id for i in range(0, 6000, 1000)
            for f in a.process(batch_from_arrays(X[i : i + 1000], schema=SCHEMA, client_ids=callers[i : i + 1000],
                                                 start_index=i)).findings]
    b = _detector()
    b.load_state_dict(a.state_dict())
    tail = [f.trigger_event_id for i in range(6000, N, 1000)
            for f in b.process(batch_from_arrays(X[i : i + 1000], schema=SCHEMA, client_ids=callers[i : i + 1000],
                                                 start_index=i)).findings]
    assert head + tail == whole == ["e3949"]


def test_the_engine_stores_the_notice_as_a_data_quality_alert() -> None:
    X, callers = _stream(5)
    cfg = MonitorConfig(defaults=ModelConfig(detectors={"drift": DetectorSpec(params={"calibration_events": 20_000})}))
    eng = Engine(cfg, "r")
    msgs = [
        {"event_id": f"e{i}", "ts": 1_767_225_600.0 + i, "model": "m", "model_version": "1", "client_id": callers[i],
         "features": {f"f{j}": float(X[i, j]) for j in range(D)}, "prediction": "a"}
        for i in range(6000)
    ]
    raw = [RawMessage("predictions", "p", 0, i, encode_message(m)) for i, m in enumerate(msgs)]
    alerts = [a for k in range(0, len(raw), 2000) for a in eng.process(raw[k : k + 2000]).alerts]
    dq = [a for a in alerts if a["kind"] == "data_quality" and a["detector"] == "drift.coverage"]
    assert len(dq) == 1
    assert "drift tests inactive" in json.loads(str(dq[0]["explanation"]))["summary"]
