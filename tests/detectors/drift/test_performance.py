"""Tests of the ``performance`` detector on joined outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.drift_traffic import make_stream, outcomes
from detectors.base import REGISTRY, DetectorContext, Kind
from detectors.drift import PerformanceDetector
from pipeline.events import FeatureSchema, RouteKey

CTX = DetectorContext(RouteKey("synthetic", "1", 0), FeatureSchema(("a",)))


def swap(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = labels.copy()
    out[labels == 0], out[labels == 1] = 1, 0
    return out


def run(det: PerformanceDetector, batches):  # type: ignore[no-untyped-def]
    return [f for b in batches for f in det.process_outcomes(b).findings]


def test_registered() -> None:
    assert REGISTRY["performance"] is PerformanceDetector
    assert PerformanceDetector.consumes == "outcomes"


@pytest.mark.parametrize("delay", [0.0, 600.0])
def test_concept_drift_detected_inline_and_delayed(delay: float) -> None:
    s = make_stream(8000, d=4, seed=2, change_at=5000, label_change=swap)
    f = run(PerformanceDetector(CTX), outcomes(s, delay=delay, sizes=333))
    assert f and f[0].kind == Kind.PERFORMANCE and not f[0].is_update
    idx = int(f[0].trigger_event_id.split("-e")[1])
    assert 5000 <= idx < 5600
    assert f[0].explanation["top"][0]["current"] > f[0].explanation["top"][0]["reference"]


def test_quiet_and_batch_invariant() -> None:
    s = make_stream(30_000, d=4, seed=4)
    assert run(PerformanceDetector(CTX), outcomes(s, sizes=1000)) == []
    s2 = make_stream(8000, d=4, seed=2, change_at=5000, label_change=swap)
    a = run(PerformanceDetector(CTX), outcomes(s2, sizes=7))
    b = run(PerformanceDetector(CTX), outcomes(s2, sizes=8000))
    assert a == b and a


def test_state_round_trip() -> None:
    s = make_stream(8000, d=4, seed=2, change_at=5000, label_change=swap)
    batches = list(outcomes(s, sizes=400))
    full = PerformanceDetector(CTX)
    ref = [full.process_outcomes(b) for b in batches]
    a = PerformanceDetector(CTX)
    for b in batches[:9]:
        a.process_outcomes(b)
    c = PerformanceDetector(CTX)
    c.load_state_dict(a.state_dict())
    assert [c.process_outcomes(b) for b in batches[9:]] == ref[9:]


@pytest.mark.parametrize("kw", [{"reference_size": 5}, {"window_sizes": (75,)}, {"quiet_windows": 0}])
def test_validation(kw: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        PerformanceDetector(CTX, **kw)
