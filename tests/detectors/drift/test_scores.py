"""Score functions and their tail conversion: Klotz-type spread scores and tilt roots."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri
from scipy.stats import norm

from benchmarks.drift_traffic import make_stream, to_batches
from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from detectors.drift._stats import signed_root_binomial, tilt_root_table
from pipeline.events import FeatureSchema, RouteKey


def _root(values: np.ndarray, probs: np.ndarray, m: np.ndarray) -> np.ndarray:
    lo, hi, g = tilt_root_table(values, probs)
    return np.interp(m, np.linspace(lo, hi, len(g)), g)


def test_tilt_root_is_the_binomial_signed_root_for_two_points() -> None:
    m = np.linspace(0.01, 0.99, 50)
    got = _root(np.array([0.0, 1.0]), np.array([0.8, 0.2]), m)
    want = signed_root_binomial(m, np.full(50, 0.2), np.ones(50))
    assert np.allclose(got, want, atol=2e-3)


def test_tilt_root_matches_the_exact_tail_of_a_skewed_score() -> None:
    """Mean of n squared normal scores (16 bins): the tilt root tracks the exact tail, Wald does not."""
    q, n = 16, 50
    u = (np.arange(q) + 0.5) / q
    s, p = ndtri(u) ** 2, np.full(q, 1.0 / q)
    mu, sd = float((s * p).sum()), float(np.sqrt(((s - (s * p).sum()) ** 2 * p).sum()))
    # exact distribution of the sum by convolution on a fine lattice
    step = 1e-3
    k = np.round(s / step).astype(int)
    pmf = np.zeros(k.max() * n + 1)
    pmf[0] = 1.0
    one = np.zeros(k.max() + 1)
    np.add.at(one, k, p)
    for _ in range(n):
        pmf = np.convolve(pmf, one)[: len(pmf)]
    sums = np.arange(len(pmf)) * step
    target = 1e-7  # upper tail probability
    cut = sums[np.searchsorted(np.cumsum(pmf[::-1])[::-1] < target, True)]
    m = cut / n
    z_exact = -norm.ppf(target)
    z_wald = (m - mu) / sd * np.sqrt(n)
    z_tilt = float(_root(s, p, np.array([m]))[0]) * np.sqrt(n)
    assert abs(z_tilt - z_exact) < 0.25, (z_tilt, z_exact)
    assert z_wald > z_exact + 0.5  # Wald overstates the evidence of a spread increase


def test_scale_change_is_caught_by_the_spread_score() -> None:
    d = 8
    s = make_stream(5000, d=d, seed=3, world_seed=3)
    s.X[3500:, 4] *= 1.6
    schema = FeatureSchema(tuple(f"f{i}" for i in range(d)), from_array=True)
    det = DriftDetector(DetectorContext(RouteKey("m", "1"), schema, seed=3), calibration_events=20_000)
    found = [f for b in to_batches(s, 700) for f in det.process(b).findings if not f.is_update]
    assert found
    f = found[0]
    assert int(f.trigger_event_id.split("-e")[1]) >= 3500
    assert f.explanation["top"][0]["stat"] == "feature:f4"
