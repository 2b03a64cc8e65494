"""Behavioural tests of the ``drift`` detector (small d and short streams to keep them fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.drift_traffic import make_stream, to_batches
from detectors.base import REGISTRY, DetectorContext, Kind, StateMismatchError
from detectors.drift import DriftDetector
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays
from pipeline.timefmt import rfc3339_ms

D = 8
ROUTE = RouteKey("synthetic", "1", 0)
SCHEMA = FeatureSchema(numeric=tuple(f"f{i}" for i in range(D)), from_array=True)
FAST = {"calibration_events": 30_000}


def ctx(budget: float = 1e7, seed: int = 0, schema: FeatureSchema = SCHEMA) -> DetectorContext:
    return DetectorContext(ROUTE, schema, seed=seed, events_between_false_alarms=budget)


def run(det: DriftDetector, stream, sizes):  # type: ignore[no-untyped-def]
    findings, stats = [], []
    for b in to_batches(stream, sizes):
        out = det.process(b)
        findings.extend(out.findings)
        stats.extend(out.stats)
    return findings, stats


def shift_f5(X: np.ndarray, rng: np.random.Generator, frac: np.ndarray) -> np.ndarray:
    X = X.copy()
    X[:, 5] += 1.0  # decisive in this stream (0.8 sd peaked at 5.8 against 5.6: one episode or two)
    return X


@pytest.fixture(scope="module")
def shifted_stream():  # type: ignore[no-untyped-def]
    return make_stream(7000, d=D, seed=3, change_at=4000, change=shift_f5)


def test_registered() -> None:
    assert REGISTRY["drift"] is DriftDetector


def test_detects_shift_and_explains_it(shifted_stream) -> None:  # type: ignore[no-untyped-def]
    det = DriftDetector(ctx(), **FAST)
    findings, stats = run(det, shifted_stream, 500)
    raised = [f for f in findings if not f.is_update]
    assert len(raised) == 1
    f = raised[0]
    assert f.kind == Kind.DRIFT and f.client_id is None
    idx = int(f.trigger_event_id.split("-e")[1])
    assert 4000 <= idx < 4000 + 600
    assert f.raised_at == float(shifted_stream.ts[idx])
    assert f.score > f.threshold
    ex = f.explanation
    json.dumps(ex)
    feats = [e for e in ex["top"] if e["stat"].startswith("feature:")]
    assert feats[0]["stat"] == "feature:f5"
    assert feats[0]["current"]["median"] > feats[0]["reference"]["median"]
    assert ex["config_hash"] == det.config_hash
    assert ex["reference_period"]["n"] == 2000
    assert ex["events_between_false_alarms"] == 1e7
    assert ex["false_alarm_budget"]["this_detector"] == 1e7
    period = ex["reference_period"]
    assert period["start_at"] == rfc3339_ms(period["start"]) and period["end_at"] == rfc3339_ms(period["end"])
    # time series: every 1000 monitored events, one point per channel plus the combined statistic
    names = {s.stat for s in stats}
    assert {"feature:f5", "output:confidence", "output:prediction", "multivariate:residual", "drift"} <= names
    f5 = [s for s in stats if s.stat == "feature:f5"]
    assert [s.window for s in f5] == list(range(len(f5)))
    assert f5[-1].score is not None and f5[-1].threshold is not None
    last = [s for s in stats if s.window == f5[-1].window]
    combined = [s for s in last if s.stat == "drift"][0]
    assert combined.score is not None and combined.threshold is not None and combined.score > combined.threshold
    feat_scores = {s.stat: s.score for s in last if s.stat.startswith("feature:")}
    assert max(feat_scores, key=lambda k: feat_scores[k] or 0.0) == "feature:f5"
    assert "joint:inputs:location" in names
    assert isinstance(ex["summary"], str) and "f5" in ex["summary"] and "threshold" in ex["summary"]


def test_quiet_on_benign_caller_dependent_stream() -> None:
    s = make_stream(20_000, d=D, seed=11)
    det = DriftDetector(ctx(), **FAST)
    findings, _ = run(det, s, 1000)
    assert findings == []


def test_batch_invariance(shifted_stream) -> None:  # type: ignore[no-untyped-def]
    s = shifted_stream
    results = []
    for sizes in (1, 7, 500, len(s.ts)):
        det = DriftDetector(ctx(), **FAST)
        results.append(run(det, s, sizes))
    ref_f, ref_s = results[0]
    assert ref_f
    for f, st in results[1:]:
        assert f == ref_f
        assert st == ref_s


def test_state_round_trip(shifted_stream) -> None:  # type: ignore[no-untyped-def]
    s = shifted_stream
    batches = list(to_batches(s, 300))
    full = DriftDetector(ctx(), **FAST)
    outs_full = [full.process(b) for b in batches]
    for cut in (3, 14):  # inside the reference period, and while monitoring
        a = DriftDetector(ctx(), **FAST)
        for b in batches[:cut]:
            a.process(b)
        snap = a.state_dict()
        b2 = DriftDetector(ctx(), **FAST)
        b2.load_state_dict(snap)
        rest = [b2.process(b) for b in batches[cut:]]
        assert rest == outs_full[cut:]
    with pytest.raises(StateMismatchError):
        DriftDetector(ctx(), calibration_events=40_000).load_state_dict(snap)


def test_state_is_plain_values(shifted_stream) -> None:  # type: ignore[no-untyped-def]
    det = DriftDetector(ctx(), **FAST)
    run(det, shifted_stream, 1000)

    def check(v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                assert isinstance(k, str)
                check(x)
        elif isinstance(v, list | tuple):
            for x in v:
                check(x)
        else:
            assert v is None or isinstance(v, str | int | float | bool | np.ndarray), type(v)

    check(det.state_dict())


def test_episode_update_semantics() -> None:
    """A temporary shift gives one alert and one update closing it; a later shift a new alert."""

    def temp(X: np.ndarray, rng: np.random.Generator, frac: np.ndarray) -> np.ndarray:
        X = X.copy()
        pos = np.arange(len(X))
        on = (pos < 1500) | (pos >= 4500)
        X[on, 0] += 1.5
        return X

    s = make_stream(9000, d=D, seed=5, change_at=3000, change=temp)
    det = DriftDetector(ctx(), quiet_windows=3, **FAST)
    findings, _ = run(det, s, 250)
    first, upd = findings[0], findings[1]
    assert not first.is_update and upd.is_update
    assert upd.trigger_event_id == first.trigger_event_id
    assert upd.raised_at == first.raised_at and upd.kind == first.kind and upd.client_id is None
    assert upd.updated_at is not None and upd.window_end is not None
    assert first.raised_at <= upd.window_end <= upd.updated_at
    assert upd.updated_at > float(s.ts[4500])
    later = [f for f in findings[2:] if not f.is_update]
    assert len(later) == 1 and later[0].raised_at > upd.updated_at


def test_correlation_only_shift_detected() -> None:
    """Flip the sign of half the features' loading on the strongest factor: marginals stay the same."""
    from benchmarks.drift_traffic import World

    w = World(D, 0)

    def corr(X: np.ndarray, rng: np.random.Generator, frac: np.ndarray) -> np.ndarray:
        n = len(X)
        F = rng.normal(size=(n, 4))
        L = w.loadings.copy()
        L[2, : D // 2] *= -1
        new = F @ L + rng.normal(size=(n, D))
        new[:, 1] = np.round(new[:, 1])  # keep the integer-valued features integer
        new[:, 3] = np.round(2 * new[:, 3])
        return new

    s = make_stream(7000, d=D, seed=8, change_at=4000, change=corr, bursts=False)
    det = DriftDetector(ctx(), **FAST)
    findings, _ = run(det, s, 1000)
    assert findings and not findings[0].is_update
    assert findings[0].explanation["top"][0]["stat"].startswith("multivariate:")


def test_works_without_probabilities_categoricals_and_with_d1() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    X = rng.normal(size=(n, 1))
    X[3000:, 0] += 1.0
    C = np.array([["a" if v < 0.5 else "b"] for v in rng.random(n)], dtype=object)
    C[3000:, 0] = "c"
    schema = FeatureSchema(numeric=("x",), categorical=("k",))
    det = DriftDetector(ctx(schema=schema), **FAST)
    out = det.process(batch_from_arrays(X, C=C, schema=schema, route=ROUTE))
    assert len(out.findings) == 1
    stats = {e["stat"] for e in out.findings[0].explanation["top"]}
    assert {"feature:x", "categorical:k"} <= stats


def test_reference_param() -> None:
    rng = np.random.default_rng(1)
    ref = {"X": rng.normal(size=(1500, 3))}
    det = DriftDetector(ctx(schema=FeatureSchema(("a", "b", "c"))), reference=ref, **FAST)
    X = rng.normal(size=(3000, 3))
    X[1000:, 2] *= 2.0
    out = det.process(batch_from_arrays(X, schema=FeatureSchema(("a", "b", "c")), route=ROUTE))
    assert out.findings[0].explanation["top"][0]["stat"] == "feature:c"
    assert out.findings[0].explanation["reference_period"]["source"] == "reference param"


def test_robust_reference_outliers() -> None:
    """Attack queries in the reference (extreme values) do not hide a later real shift."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6000, 2))
    X[:2000:50, 0] = 1e6  # 2% absurd values in the reference period
    X[4000:, 0] += 0.6
    schema = FeatureSchema(("a", "b"))
    det = DriftDetector(ctx(schema=schema), **FAST)
    cids: list[str | None] = [f"c{i}" for i in range(len(X))]  # independent callers (not anonymous)
    out = det.process(batch_from_arrays(X, schema=schema, route=ROUTE, client_ids=cids))
    assert out.findings and out.findings[0].explanation["top"][0]["stat"] == "feature:a"
    assert det.model["ref_loc"][0] < 0.2


@pytest.mark.parametrize(
    "kw",
    [
        {"reference_size": 10},
        {"block_size": 0},
        {"window_sizes": (130,)},
        {"window_sizes": ()},
        {"n_bins": 2},
        {"caller_cap": 0.0},
        {"quiet_windows": 0},
        {"calibration_events": 100},
        {"min_caller_correlation": 1.0},
        {"reference": {"Y": [1]}},
        {"max_reference_size": -1},
    ],
)
def test_validation(kw: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        DriftDetector(ctx(), **kw)
