"""Class-probability channels of ``drift`` (soft outputs) and the dominating-caller explanation."""

from __future__ import annotations

import json

import numpy as np

from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays

SCHEMA = FeatureSchema(("a", "b", "c", "d"), from_array=True, classes=("repaid", "default"))
FAST = {"calibration_events": 30_000}
CHANGE = 4000


def ctx(schema: FeatureSchema = SCHEMA) -> DetectorContext:
    return DetectorContext(RouteKey("loans", "1"), schema, seed=3)


def soft_stream(n: int = 8000, shift: float = 0.0, seed: int = 0):  # type: ignore[no-untyped-def]
    """A binary model with soft outputs; from ``CHANGE`` on its logit moves by ``shift`` (inputs unchanged)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    logit = 1.2 * X[:, 0] - 1.8 + rng.normal(0.0, 0.8, size=n)
    logit[CHANGE:] += shift
    p = np.round(1.0 / (1.0 + np.exp(-logit)), 4)
    P = np.column_stack([1.0 - p, p])
    callers = [f"acct-{i}" for i in rng.integers(0, 400, size=n)]
    pred = ["default" if q >= 0.5 else "repaid" for q in p]
    return X, P, callers, pred


def feed(det: DriftDetector, X, P, callers, pred, size: int = 700, start: int = 0):  # type: ignore[no-untyped-def]
    out = []
    for i in range(start, len(X), size):
        sl = slice(i, i + size)
        out.extend(det.process(batch_from_arrays(
            X[sl], probabilities=P[sl], client_ids=callers[sl], prediction=pred[sl], schema=SCHEMA, start_index=i,
        )).findings)
    return [f for f in out if not f.is_update]


def test_binary_model_gets_one_probability_channel_of_its_rarer_class() -> None:
    det = DriftDetector(ctx(), **FAST)
    X, P, callers, pred = soft_stream(2500)
    feed(det, X, P, callers, pred)
    names = [n for n in det.model["names"] if n.startswith("output:P(")]
    assert names == ["output:P(default)"]
    assert "outputs:probabilities" not in det.model["group_names"]  # one column: single tests only


def test_many_classes_capped_by_reference_frequency_and_one_redundant_column_dropped() -> None:
    rng = np.random.default_rng(1)
    n, k = 2500, 12
    X = rng.normal(size=(n, 3))
    logits = rng.normal(size=(n, k)) + np.linspace(2.0, 0.0, k)
    P = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    schema = FeatureSchema(("a", "b", "c"), from_array=True, classes=tuple(f"k{j}" for j in range(k)))
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=0), max_class_channels=4, **FAST)
    det.process(batch_from_arrays(X, probabilities=P, schema=schema))
    assert det.model["prob_classes"] == ["k0", "k1", "k2", "k3"]  # the four most probable (cap < k - 1)
    five = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=0), max_class_channels=11, **FAST)
    five.process(batch_from_arrays(X, probabilities=P, schema=schema))
    assert five.model["prob_classes"] == [f"k{j}" for j in range(1, k)]  # all but the most probable
    joint = dict(zip(five.model["group_names"], five.model["group_dof"], strict=False))
    assert joint["outputs:probabilities"] == k - 1
    off = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=0), max_class_channels=0, **FAST)
    off.process(batch_from_arrays(X, probabilities=P, schema=schema))
    assert off.model["prob_classes"] == []


def test_soft_output_shift_is_detected_and_names_the_class() -> None:
    """Mean P(default) 0.22 -> 0.28 while the predicted-default share moves 11% -> 18%."""
    X, P, callers, pred = soft_stream(shift=0.5)
    det = DriftDetector(ctx(), **FAST)
    found = feed(det, X, P, callers, pred)
    assert found, "no finding"
    f = found[0]
    idx = int(f.trigger_event_id[1:])
    assert CHANGE <= idx < CHANGE + 1000, idx
    assert f.explanation["trigger_test"] == "output:P(default) (location)"
    top = {e["stat"]: e for e in f.explanation["top"]}
    e = top["output:P(default)"]
    assert e["current"]["mean"] > e["reference"]["mean"] + 0.03
    assert "P(default) 0." in f.explanation["summary"]
    json.dumps(f.explanation)
    # the hard predictions alone need longer (or never) to show it
    hard = DriftDetector(ctx(), max_class_channels=0, **FAST)
    found_hard = feed(hard, X, P, callers, pred)
    assert not found_hard or int(found_hard[0].trigger_event_id[1:]) > idx


def test_benign_soft_outputs_quiet_and_batch_invariant() -> None:
    X, P, callers, pred = soft_stream(12000, seed=4)
    runs = []
    for size in (1000, 333):
        det = DriftDetector(ctx(), **FAST)
        runs.append(feed(det, X, P, callers, pred, size=size))
        assert runs[-1] == []
    # probability columns are matched by class name, whatever order a batch lists them in
    swapped = FeatureSchema(("a", "b", "c", "d"), from_array=True, classes=("default", "repaid"))
    a, b = DriftDetector(ctx(), **FAST), DriftDetector(ctx(), **FAST)
    for i in range(0, 4000, 1000):
        sl = slice(i, i + 1000)
        a.process(batch_from_arrays(X[sl], probabilities=P[sl], client_ids=callers[sl], schema=SCHEMA, start_index=i))
        b.process(batch_from_arrays(X[sl], probabilities=P[sl][:, ::-1], client_ids=callers[sl], schema=swapped,
                                    start_index=i))
    assert a.state_dict() == b.state_dict() or np.array_equal(a.model["tab"], b.model["tab"])


def test_explanation_names_a_dominating_caller() -> None:
    """Inputs move while one caller sends half of the traffic: the alert says who holds the window."""
    rng = np.random.default_rng(5)
    n = 7000
    X = rng.normal(size=(n, 4))
    callers = [f"acct-{i}" for i in rng.integers(0, 400, size=n)]
    hot = np.flatnonzero((np.arange(n) >= CHANGE) & (rng.random(n) < 0.5))
    X[CHANGE:, 0] += 0.8
    for i in hot:
        callers[i] = "acct-7"
    det = DriftDetector(ctx(FeatureSchema(("a", "b", "c", "d"), from_array=True)), **FAST)
    found = []
    for i in range(0, n, 500):
        sl = slice(i, i + 500)
        found += [f for f in det.process(batch_from_arrays(X[sl], client_ids=callers[sl], start_index=i)).findings
                  if not f.is_update]
    assert found
    top = found[0].explanation["top_callers"]
    assert top[0]["client_id"] == "acct-7" and 0.3 < top[0]["share"] < 0.7
    assert len(top) == 3
    assert "caller acct-7 sent" in found[0].explanation["summary"]


def test_reference_param_with_probabilities() -> None:
    """A reference mapping (e.g. a reference file) carries probabilities in the route's class order."""
    X, P, callers, pred = soft_stream(9000, shift=0.8)
    ref = {"X": X[:2000], "probabilities": P[:2000], "prediction": pred[:2000], "client_ids": callers[:2000]}
    det = DriftDetector(ctx(), reference=ref, **FAST)
    assert det.model["prob_classes"] == ["default"]
    found = []
    for i in range(2000, 9000, 500):
        sl = slice(i, i + 500)
        found += [f for f in det.process(batch_from_arrays(
            X[sl], probabilities=P[sl], client_ids=callers[sl], prediction=pred[sl], schema=SCHEMA, start_index=i,
        )).findings if not f.is_update]
    assert found and int(found[0].trigger_event_id[1:]) >= CHANGE
    assert "P(default)" in found[0].explanation["summary"]
