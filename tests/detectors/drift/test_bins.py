"""Bin layout of ``drift``: tail-refined reference-quantile bins (``bin_span``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from detectors.drift.reference import bin_levels
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays

D = 6
SCHEMA = FeatureSchema(tuple(f"f{i}" for i in range(D)), from_array=True)


def test_levels_are_evenly_spaced_normal_scores_or_equal_probabilities() -> None:
    lv = bin_levels(16, 2.33)
    assert len(lv) == 15 and np.all(np.diff(lv) > 0)
    assert lv[0] == pytest.approx(0.0099, abs=1e-4) and lv[-1] == pytest.approx(1 - 0.0099, abs=1e-4)
    np.testing.assert_allclose(np.diff(norm.ppf(lv)), 4.66 / 14)  # equal steps in normal scores
    np.testing.assert_allclose(lv + lv[::-1], 1.0)  # symmetric
    np.testing.assert_allclose(bin_levels(16, 0.0), np.arange(1, 16) / 16)


def test_fitted_edges_are_the_reference_quantiles_at_those_levels() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, D))
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), SCHEMA, seed=0), calibration_events=10_000,
                        reference={"X": X, "client_ids": [f"c{i}" for i in range(20_000)]})
    np.testing.assert_allclose(det.model["edges"][0], norm.ppf(bin_levels(16, 2.33)), atol=0.1)
    assert det.model["edges"][0][0] < -2.2  # the outer bin holds the lowest 1%, not the lowest 6.25%


def _first_alarm(seed: int, **kw: float) -> int | None:
    """One feature's scale x1.5 from event 6,000 (a 2,000-event reference, 4,000 events monitored before)."""
    rng = np.random.default_rng(seed)
    n = 10_000
    X = rng.normal(size=(n, D))
    X[6000:, 2] *= 1.5
    callers: list[str | None] = [f"c{i}" for i in rng.integers(0, 5000, size=n)]
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), SCHEMA, seed=seed), calibration_events=20_000, **kw)
    for i in range(0, n, 1000):
        b = batch_from_arrays(X[i : i + 1000], schema=SCHEMA, client_ids=callers[i : i + 1000], start_index=i)
        for f in det.process(b).findings:
            if not f.is_update:
                assert "feature:f2" in [c["stat"] for c in f.explanation["top"][:2]]
                return int(f.trigger_event_id[1:])
    return None


def test_tail_bins_find_a_scale_change_sooner() -> None:
    # measured: 99/149/99/149/149 events after the change vs 199/199/99/299/199 with equal-probability bins
    tail = [_first_alarm(s) or 10_000 for s in range(1, 6)]
    equal = [_first_alarm(s, bin_span=0.0) or 10_000 for s in range(1, 6)]
    assert all(6000 <= t <= e for t, e in zip(tail, equal, strict=True)), (tail, equal)
    assert sum(tail) < sum(equal), (tail, equal)


def test_bin_span_is_validated() -> None:
    with pytest.raises(ValueError, match="bin_span"):
        DriftDetector(DetectorContext(RouteKey("m", "1"), SCHEMA), bin_span=-1.0)
