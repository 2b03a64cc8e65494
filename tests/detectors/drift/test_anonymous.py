"""Anonymous traffic (no client_id): serial dependence comes from pseudo-callers of consecutive events."""

from __future__ import annotations

import numpy as np

from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from detectors.drift.callers import variance_codes
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays
from pipeline.traffic import generate


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
