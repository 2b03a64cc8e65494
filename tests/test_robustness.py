"""The default detectors on awkward but valid traffic: they must neither crash nor write NaN.

Production logs carry missing values, constant and huge-valued features, string features, models
without probabilities, regression outputs, several models and versions interleaved, and single
callers. None of that is malformed, so all of it must be scored.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from pipeline.config import MonitorConfig
from pipeline.engine import BatchResult, Engine
from pipeline.events import RawMessage


def _events(kind: str, n: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(size=6)
        ev: dict[str, object] = {"event_id": f"{kind}-{i}", "ts": 1.8e9 + i * 0.5, "model": kind,
                                 "client_id": f"c{int(rng.zipf(1.5)) % 50}"}
        if kind == "nulls":
            ev["features"] = [None if rng.random() < 0.2 else float(v) for v in x]
        elif kind == "constant":
            ev["features"] = [0.0, 1.0, float(x[0]), 0.0, 5.0, float(x[1])]
        elif kind == "huge":
            ev["features"] = [float(v * 1e12) for v in x] + [1e-12 * float(x[0])]
        elif kind == "mixed-types":
            ev["features"] = {"age": int(abs(x[0]) * 30), "country": ["fr", "de", "us"][i % 3],
                              "vip": bool(i % 2), "score": None if i % 7 == 0 else float(x[1]),
                              "note": None}
        elif kind == "single-caller":
            ev["features"] = [float(v) for v in x]
            ev["client_id"] = "only-one"
        else:
            ev["features"] = [float(v) for v in x]
        if kind == "regression":
            ev["prediction"] = float(x.sum())
        else:
            p = float(1 / (1 + math.exp(-x[0])))
            ev["prediction"] = "yes" if p > 0.5 else "no"
            if kind != "no-probabilities":
                ev["probabilities"] = {"yes": round(p, 4), "no": round(1 - p, 4)}
        if kind == "versions":
            ev["model_version"] = str(i // 1500)
        out.append(ev)
    return out


KINDS = ["nulls", "constant", "huge", "mixed-types", "single-caller", "regression", "no-probabilities",
         "versions"]


@pytest.mark.parametrize("kind", KINDS)
def test_default_detectors_score_awkward_valid_traffic(kind: str) -> None:
    events = _events(kind, 4500, seed=KINDS.index(kind))
    msgs = [RawMessage("predictions", "p", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    eng = Engine(MonitorConfig(), "r")
    total = BatchResult()
    for start in range(0, len(msgs), 1000):
        r = eng.process(msgs[start : start + 1000])
        total.alerts += r.alerts
        total.stats += r.stats
        total.events += r.events
        assert not r.dead_letters
    assert total.events == len(events)
    # every stream here is stationary: a drift alarm would be a false alarm
    assert not [a for a in total.alerts if a["kind"] in ("drift", "performance")]
    for row in total.alerts:
        assert math.isfinite(row["score"]) and row["raised_at"]
        assert "NaN" not in row["explanation"] and "Infinity" not in row["explanation"]
    for row in total.stats:
        for col in ("location", "spread", "score", "threshold"):
            assert row[col] is None or math.isfinite(row[col])


def test_interleaved_models_get_their_own_state() -> None:
    events = sorted(_events("constant", 3000, 1) + _events("nulls", 3000, 2), key=lambda e: e["ts"])  # type: ignore[arg-type,return-value]
    msgs = [RawMessage("predictions", "p", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    eng = Engine(MonitorConfig(), "r")
    eng.process(msgs)
    assert {r.model for r in eng.scope(0).routes} == {"constant", "nulls"}
