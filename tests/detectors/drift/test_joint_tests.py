"""Joint tests of ``drift``: many small shifts, prior shift, and a heavy caller that must stay quiet."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.drift_traffic import World, make_stream, to_batches
from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays

D = 32
SCHEMA = FeatureSchema(tuple(f"f{i}" for i in range(D)), from_array=True)
FAST = {"calibration_events": 30_000}
CHANGE = 4000


def ctx(seed: int = 0) -> DetectorContext:
    return DetectorContext(RouteKey("m", "1"), SCHEMA, seed=seed)


def first_alarm(det: DriftDetector, s, sizes=700):  # type: ignore[no-untyped-def]
    for b in to_batches(s, sizes):
        for f in det.process(b).findings:
            if not f.is_update:
                return f
    return None


def test_ten_small_shifts_detected_within_300_events() -> None:
    """10 features +0.3 sd each: no single feature is remarkable, the joint location test is."""
    w = World(D, 1)
    sd = np.sqrt((w.loadings**2).sum(0) + 1.0)

    def multi(X, rng, frac):  # type: ignore[no-untyped-def]
        X = X.copy()
        X[:, 10:20] += 0.3 * sd[10:20]
        return X

    s = make_stream(6000, d=D, seed=21, world_seed=1, change_at=CHANGE, change=multi)
    f = first_alarm(DriftDetector(ctx(1), **FAST), s)
    assert f is not None
    idx = int(f.trigger_event_id.split("-e")[1])
    assert CHANGE <= idx < CHANGE + 300, idx
    assert f.explanation["trigger_test"] == "inputs:location"
    joint = {t["test"]: t for t in f.explanation["joint_tests"]}
    assert joint["inputs:location"]["dof"] == D
    moved = {e["stat"] for e in f.explanation["top"]}
    assert len(moved & {f"feature:f{j}" for j in range(10, 20)}) >= 2
    assert "window" in f.explanation["summary"] and "> threshold" in f.explanation["summary"]
    json.dumps(f.explanation)


def test_prior_shift_detected_within_300_events() -> None:
    """The class mix moves (with the inputs that drive it)."""
    w = World(D, 2)

    def prior(X, rng, frac):  # type: ignore[no-untyped-def]
        return X + 0.5 * w.loadings[0]

    s = make_stream(6000, d=D, seed=22, world_seed=2, change_at=CHANGE, change=prior)
    f = first_alarm(DriftDetector(ctx(2), **FAST), s)
    assert f is not None
    idx = int(f.trigger_event_id.split("-e")[1])
    assert CHANGE <= idx < CHANGE + 300, idx


def test_class_mix_alone_is_one_joint_test() -> None:
    """Only the predicted-class distribution moves (inputs unchanged): the class-mix test fires.

    Events carry distinct client ids: anonymous events would be treated as serially dependent
    (pseudo-callers of ``anonymous_run`` consecutive events), which is not what this test is about.
    """
    rng = np.random.default_rng(5)
    n, d = 6000, 3
    X = rng.normal(size=(n, d))
    p_ref = np.array([0.4, 0.3, 0.2, 0.1])
    p_new = np.array([0.3, 0.3, 0.25, 0.15])
    cls = np.concatenate([rng.choice(4, size=CHANGE, p=p_ref), rng.choice(4, size=n - CHANGE, p=p_new)])
    schema = FeatureSchema(("a", "b", "c"))
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=0), **FAST)
    cids: list[str | None] = [f"c{i}" for i in range(n)]
    out = det.process(batch_from_arrays(X, prediction=[str(c) for c in cls], client_ids=cids, schema=schema))
    assert out.findings
    f = out.findings[0]
    assert f.explanation["trigger_test"] == "output:prediction:mix"
    assert int(f.trigger_event_id[1:]) >= CHANGE
    assert "predicted-class mix" in f.explanation["summary"]


def heavy_caller_stream(seed: int, n: int = 24_000):  # type: ignore[no-untyped-def]
    """Benign traffic plus one batch job with ~10% of the traffic, its own inputs and class mix,
    arriving in bursts (absent from a long stretch, then dense)."""
    s = make_stream(n, d=D, seed=seed, world_seed=3)
    rng = np.random.default_rng(seed)
    w = World(D, 3)
    # the job's events: a factor offset that gives it its own class mix; bursts of 1,000 events
    # every 3,000 (one inside the reference period), where it sends ~30% of the traffic
    on = np.zeros(n, dtype=bool)
    for start in range(500, n - 1000, 3000):
        on[start : start + 1000] = rng.random(1000) < 0.3
    F = rng.normal(size=(int(on.sum()), 4)) + np.array([1.5, -1.0, 0.0, 0.5])
    s.X[on] = F @ w.loadings + rng.normal(size=(int(on.sum()), D))
    logits = s.X[on] @ w.weights
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    s.P[on] = np.round(P, 4)
    pred = s.P.argmax(1)
    s.prediction[:] = [str(int(p)) for p in pred]
    for k in np.flatnonzero(on):
        s.client_ids[k] = "nightly-batch"
    return s, on


def test_heavy_batch_caller_with_own_class_mix_stays_quiet() -> None:
    s, on = heavy_caller_stream(31)
    # the job really does have its own class mix
    pred = np.array([int(p) for p in s.prediction])
    mix_job = np.bincount(pred[on], minlength=5) / on.sum()
    mix_rest = np.bincount(pred[~on], minlength=5) / (~on).sum()
    assert 0.5 * np.abs(mix_job - mix_rest).sum() > 0.2
    det = DriftDetector(ctx(3), **FAST)
    found = [f for b in to_batches(s, [1000, 37, 500]) for f in det.process(b).findings]
    assert found == [], found[0].explanation["summary"] if found else None


def test_benign_bursts_retries_canary_quiet_at_default_budget() -> None:
    s = make_stream(40_000, d=D, seed=41, world_seed=4)
    det = DriftDetector(ctx(4), **FAST)
    found = [f for b in to_batches(s, [997, 64, 2000]) for f in det.process(b).findings]
    assert found == []
