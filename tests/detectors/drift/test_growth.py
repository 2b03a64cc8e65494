"""Reference growth of ``drift``: a short first-events reference grows with quiet monitored blocks.

The stream: a soft binary model (``P(default)`` from a logistic score) on four features, 400
accounts with Zipf(1.05) traffic and their own offset on the score's main feature (so the class mix
varies by caller), 10% anonymous events. From ``SHIFT_AT`` on the score's intercept moves by
``shift``: the predicted-default share rises by a few points, persistently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from detectors.drift.growth import ReferenceGrowth
from pipeline import statecodec
from pipeline.events import EventBatch, FeatureSchema, RouteKey, batch_from_arrays

D = 4
SCHEMA = FeatureSchema(tuple(f"f{i}" for i in range(D)), from_array=True, classes=("ok", "default"))
N, SHIFT_AT = 40_000, 24_000


def stream(seed: int, shift: float) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    rng = np.random.default_rng(seed)
    n_acc = 400
    zipf = 1.0 / np.arange(1, n_acc + 1) ** 1.05
    acc = rng.choice(n_acc, size=N, p=zipf / zipf.sum())
    X = rng.normal(size=(N, D))
    X[:, 0] += rng.normal(0.0, 0.3, size=n_acc)[acc]
    logit = -1.6 + 1.2 * X[:, 0] + 0.5 * X[:, 1]
    logit[SHIFT_AT:] += shift
    p1 = 1.0 / (1.0 + np.exp(-logit))
    ids: list[str | None] = [None if a % 10 == 0 else f"acct{a}" for a in acc]
    return X, np.column_stack([1.0 - p1, p1]), ids


def batches(seed: int, shift: float, size: int, lo: int = 0, hi: int = N) -> list[EventBatch]:
    X, P, ids = stream(seed, shift)
    return [
        batch_from_arrays(X[i : min(i + size, hi)], schema=SCHEMA, client_ids=ids[i : min(i + size, hi)],
                          probabilities=P[i : min(i + size, hi)], ts=np.arange(i, min(i + size, hi), dtype=np.float64),
                          event_ids=[f"e{k}" for k in range(i, min(i + size, hi))])
        for i in range(lo, hi, size)
    ]


def detector(seed: int, **kw: Any) -> DriftDetector:
    # anonymous events as individual callers (anonymous_share=None): this stream's heaviest
    # account sends without an id, and the default cap on anonymous events changes which of the
    # two references sees the small shift first (see docs/drift.md, "Anonymous senders among named
    # callers"); these tests are about growth
    kw.setdefault("anonymous_share", None)
    return DriftDetector(DetectorContext(RouteKey("m", "1"), SCHEMA, seed=seed), **kw)


def alarms(det: DriftDetector, bs: list[EventBatch]) -> list[int]:
    return [int(f.trigger_event_id[1:]) for b in bs for f in det.process(b).findings if not f.is_update]


def test_a_persistent_small_class_mix_shift_is_found_sooner_with_the_grown_reference() -> None:
    # the predicted-default share moves ~4 points: within the 16,000 events after the shift the
    # 2,000-event reference's own error hides it, the grown one (20,000 events by then) shows it
    for seed in (2, 3):
        frozen = alarms(detector(seed, max_reference_size=2000), batches(seed, 0.25, 5000))
        assert frozen == [], frozen
        grown = detector(seed)
        found = alarms(grown, batches(seed, 0.25, 5000))
        assert found and SHIFT_AT <= found[0], found
        period = grown.model["ref_period"]
        assert period["grown_from"] == 2000 and period["n"] == 20_000 and period["end"] < SHIFT_AT


def test_benign_stream_stays_quiet_while_the_reference_grows() -> None:
    det = detector(2)
    assert alarms(det, batches(2, 0.0, 5000)) == []
    assert det.model["ref_period"]["n"] == 20_000
    assert det.growth is not None and det.growth.events == 20_000 and not det.growth.active


def test_a_raised_drift_is_never_absorbed() -> None:
    det = detector(3)
    found = alarms(det, batches(3, 1.5, 5000))
    assert found and found[0] >= SHIFT_AT
    # every block after the change lay in a window over the threshold: the reference ends before it
    assert det.model["ref_period"]["end"] < SHIFT_AT
    assert det.growth is not None and det.growth.events + det.growth.pending_events <= SHIFT_AT


def test_growth_does_not_depend_on_batch_cuts() -> None:
    a, b = detector(4), detector(4)
    fa = alarms(a, batches(4, 0.4, 997))
    fb = alarms(b, batches(4, 0.4, 6000))
    assert fa == fb and fa
    for key in ("mu", "vref", "ref_counts", "group_gc"):
        np.testing.assert_array_equal(a.model[key], b.model[key])
    assert a.model["ref_period"] == b.model["ref_period"]


@pytest.mark.parametrize("cut", [13_500, 16_025, 17_333])
def test_a_snapshot_mid_growth_resumes_identically(cut: int) -> None:
    """Cuts between refits, right after one (16,025), and inside a time block and a monitoring block."""
    whole = detector(5)
    expected = alarms(whole, batches(5, 0.4, 1000))
    first = detector(5)
    got = alarms(first, batches(5, 0.4, 1000, hi=cut))
    assert first.growth is not None and first.growth.active  # the reference is still growing
    second = detector(5)
    second.load_state_dict(statecodec.decode(statecodec.encode(first.state_dict())))
    got += alarms(second, batches(5, 0.4, 1000, lo=cut))
    assert got == expected
    np.testing.assert_array_equal(second.model["vref"], whole.model["vref"])
    assert second.model["ref_period"] == whole.model["ref_period"]


def test_a_given_reference_never_grows() -> None:
    X, P, ids = stream(6, 0.0)
    det = detector(6, reference={"X": X[:3000], "client_ids": ids[:3000]})
    alarms(det, batches(6, 0.0, 5000, lo=3000))
    assert det.growth is None and det.model["ref_period"]["n"] == 3000


def test_growth_books_skip_blocks_covered_by_a_loud_window() -> None:
    g = ReferenceGrowth(n_chan=1, n_bins=2, n_cols=1, events=100, max_events=1000, block_size=50,
                        time_blocks=0, callers={})
    # windows of 3 blocks; close 4 crossed the threshold: blocks 2, 3, 4 are loud
    quiet = g.quiet_blocks(0, np.array([1.0, 2.0, 1.0, 1.0, 9.0, 1.0]), 5.0, 3)
    assert quiet.tolist() == [True, True, False, False]  # blocks 0-3 (block 4 and 5 still open)
    quiet = g.quiet_blocks(6, np.array([1.0, 1.0, 1.0]), 5.0, 3)
    assert quiet.tolist() == [False, True, True]  # blocks 4, 5, 6


def daily_mix_alarms(seed: int, **kw: Any) -> tuple[DriftDetector, list[int]]:
    """Three regions whose shares follow a daily cycle of 20,000 events (phases 120 degrees apart),
    region 0 with ``f0`` +0.3 sd and region 2 with ``f1`` -0.3 sd; 60,000 events (three days)."""
    n, day, d = 60_000, 20_000, 6
    schema = FeatureSchema(tuple(f"f{i}" for i in range(d)), from_array=True)
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    w = np.stack([1 + 0.9 * np.sin(2 * np.pi * t / day + ph) for ph in (0, 2 * np.pi / 3, 4 * np.pi / 3)], 1)
    region = (rng.random(n)[:, None] > np.cumsum(w / w.sum(1, keepdims=True), 1)).sum(1)
    X = rng.normal(size=(n, d))
    X[region == 0, 0] += 0.3
    X[region == 2, 1] -= 0.3
    ids: list[str | None] = [f"r{r}-{i}" for r, i in zip(region, rng.integers(0, 1000, size=n), strict=True)]
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=seed), **kw)
    found = []
    for i in range(0, n, 2500):
        b = batch_from_arrays(X[i : i + 2500], schema=schema, client_ids=ids[i : i + 2500],
                              ts=np.arange(i, i + 2500, dtype=np.float64), event_ids=[f"e{k}" for k in range(i, i + 2500)])
        found += [int(f.trigger_event_id[1:]) for f in det.process(b).findings if not f.is_update]
    return det, found


def test_a_daily_mix_the_first_events_never_showed_stays_quiet_as_the_reference_grows() -> None:
    """Stress F3 in miniature: the first 2,000 events are one time of day; frozen, that reference
    raises false alarms as the mix turns; growing with the quiet blocks it follows the mix."""
    _, frozen = daily_mix_alarms(1, max_reference_size=2000)
    assert len(frozen) >= 5
    det, grown = daily_mix_alarms(1)
    assert grown == []
    assert det.model["ref_period"]["n"] == 20_000


def test_growth_books_keep_only_whole_time_blocks() -> None:
    g = ReferenceGrowth(n_chan=1, n_bins=2, n_cols=1, events=100, max_events=1000, block_size=50,
                        time_blocks=2, callers={3: 1})
    one = np.array([[1, 0]])
    g.absorb(0, one, np.array([1.0]), np.array([3]), 1.0)
    g.skip(1)  # a loud block: its time block (blocks 0-1) is not kept, block 0 still joined the reference
    g.absorb(2, one, np.array([2.0]), np.array([3, 4]), 3.0)
    g.absorb(3, one, np.array([4.0]), np.array([4]), 4.0)
    assert g.pending_events == 150 and g.next_block == 4
    assert [s.tolist() for s in g.time_sums] == [[6.0]] and g.time_kept == [3.0]
    assert g.time_a == [1.0 + 4.0]  # callers 3 and 4 with 1 and 2 kept events in that time block
    assert g.caller_square_sum() == 3.0**2 + 2.0**2  # caller 3: 1 + 1 + 1, caller 4: 2
    assert not g.can_absorb(5) and g.can_absorb(4)
    counts, n = g.take()
    assert n == 150 and counts.tolist() == [[3.0, 0.0]] and g.events == 250 and g.pending_events == 0


def bursty_batches(n: int, burst_from: int, seed: int = 3) -> list[EventBatch]:
    """Interactive accounts with small offsets; from ``burst_from`` on, batch clients send bursts
    whose inputs carry their own large offset (no burst among the first events)."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(0, 2000, size=n)
    X = rng.normal(size=(n, D)) + rng.normal(0.0, 0.1, size=(2000, D))[acc]
    ids: list[str | None] = [f"acct{a}" for a in acc]
    for k, start in enumerate(range(burst_from, n - 400, 900)):
        hit = np.flatnonzero(rng.random(400) < 0.6) + start
        X[hit] += rng.normal(0.0, 0.8, size=D)
        for i in hit.tolist():
            ids[i] = f"batch{k}"
    return [batch_from_arrays(X[i : i + 1000], schema=SCHEMA, client_ids=ids[i : i + 1000],
                              ts=np.arange(i, min(i + 1000, n), dtype=np.float64),
                              event_ids=[f"e{j}" for j in range(i, min(i + 1000, n))]) for i in range(0, n, 1000)]


def test_the_grown_reference_recalibrates_on_its_own_events() -> None:
    # a small budget: the threshold is empirical, so it moves with the null it is simulated from
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), SCHEMA, seed=2, events_between_false_alarms=3000),
                        reference_size=1000, max_reference_size=8000, calibration_events=20_000)
    first: dict[str, Any] = {}
    for b in bursty_batches(16_000, burst_from=1500):
        det.process(b)
        if det.fitted and not first:
            first = {"rho": det.model["rho"].copy(), "threshold": det.threshold, "gc": det.model["group_gc"].copy()}
    g = det.growth
    assert g is not None and not g.active
    rec = det.calibration["recalibrated"]
    assert rec["reference_events"] == 8000 and det.calibration["method"] == "empirical"
    assert det.threshold != first["threshold"]  # the second recalibration's (at 4,000 events there was one too)
    assert rec["previous_threshold"] != pytest.approx(first["threshold"], abs=1e-4)
    assert np.all(det.model["rho"] >= first["rho"] - 1e-12)  # caller shares never shrink
    # the events were dropped once the reference reached its cap
    assert g.ev_bins == [] and not g.keep_events and det.hist_bins.shape[0] == 0


def test_a_snapshot_across_the_recalibration_gives_the_same_findings_and_threshold() -> None:
    bs = bursty_batches(12_000, burst_from=1500)
    whole = detector(4, reference_size=1000, max_reference_size=6000)
    expected = [f for b in bs for f in whole.process(b).findings]
    first = detector(4, reference_size=1000, max_reference_size=6000)
    got = [f for b in bs[:5] for f in first.process(b).findings]
    assert first.growth is not None and first.growth.keep_events and first.growth.ev_bins  # mid-growth
    second = detector(4, reference_size=1000, max_reference_size=6000)
    second.load_state_dict(statecodec.decode(statecodec.encode(first.state_dict())))
    got += [f for b in bs[5:] for f in second.process(b).findings]
    assert [(f.trigger_event_id, f.score, f.is_update) for f in got] == [
        (f.trigger_event_id, f.score, f.is_update) for f in expected]
    assert second.threshold == whole.threshold and second.calibration == whole.calibration
    np.testing.assert_array_equal(second.model["rho"], whole.model["rho"])
