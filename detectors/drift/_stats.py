"""Small statistical helpers shared by the drift detectors (no detector logic here).

* :func:`signed_root_binomial` turns an observed rate into a standard-normal-like score using the
  signed root of the binomial likelihood ratio, whose tails are far more accurate than the plain
  Wald ``z`` for rare events (a rare category, a missing-value rate near zero).
* :func:`weighted_quantiles` is a weighted empirical quantile (used to fit reference bins with
  per-caller weight caps).
* :func:`count_episodes` counts alarm episodes in a sequence of window verdicts with the same
  hysteresis the detectors use (an episode ends after ``quiet`` consecutive quiet windows).
* :func:`calibrate_threshold` derives the threshold on a max-of-standardised-scores statistic from
  a simulated null stream and a false-alarm budget (see ``docs/drift.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtri, xlogy


def signed_root_binomial(phat: np.ndarray, p: np.ndarray, n_eff: np.ndarray) -> np.ndarray:
    """Signed root of the binomial deviance: ``sign(phat - p) * sqrt(2 n KL(phat || p))``.

    Parameters
    ----------
    phat : array
        Observed rates (clipped to ``[0, 1]``).
    p : array
        Reference rates, strictly inside ``(0, 1)``.
    n_eff : array
        Effective sample sizes.

    Examples
    --------
    >>> z = signed_root_binomial(np.array([0.2, 0.1]), np.array([0.1, 0.1]), np.array([400.0, 400.0]))
    >>> [round(float(v), 2) for v in z]
    [5.96, 0.0]
    """
    q = np.clip(phat, 0.0, 1.0)
    kl = xlogy(q, q / p) + xlogy(1.0 - q, (1.0 - q) / (1.0 - p))
    return np.sign(q - p) * np.sqrt(2.0 * n_eff * np.maximum(kl, 0.0))


def weighted_quantiles(x: np.ndarray, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Weighted quantiles of ``x`` (NaN ignored) at ``levels`` in ``[0, 1]``.

    >>> weighted_quantiles(np.array([1.0, 2.0, 3.0, np.nan]), np.ones(4), np.array([0.5]))
    array([2.])
    """
    ok = ~np.isnan(x)
    if not ok.any():
        return np.full(len(levels), np.nan)
    xs, ws = x[ok], w[ok]
    order = np.argsort(xs, kind="stable")
    xs, ws = xs[order], ws[order]
    cw = np.cumsum(ws)
    pos = (cw - 0.5 * ws) / cw[-1]
    return np.interp(levels, pos, xs)


def count_episodes(exceed: np.ndarray, quiet: int) -> int:
    """Number of episodes: an episode starts at an exceedance and ends after ``quiet`` quiet windows.

    >>> count_episodes(np.array([1, 1, 0, 1, 0, 0, 0, 1], dtype=bool), quiet=2)
    2
    """
    idx = np.flatnonzero(exceed)
    if idx.size == 0:
        return 0
    return 1 + int(np.count_nonzero(np.diff(idx) > quiet))


def two_sided_tail(h: float) -> float:
    """``P(|Z| > h)`` for a standard normal ``Z``."""
    return float(2.0 * np.exp(log_ndtr(-h)))


def _threshold_for_count(m: np.ndarray, quiet: int, target: float) -> float:
    """Lowest threshold, scanning down from the top, whose episode count is still ``<= target``.

    The episode count is not monotone in the threshold (a very low threshold merges everything
    into one long episode), so candidates are scanned downwards from the maximum and the scan
    stops at the first level whose count exceeds ``target``.
    """
    levels = np.unique(np.quantile(m, np.linspace(0.0, 1.0, 4001)))[::-1]
    best = float(levels[0])
    for lev in levels:
        if count_episodes(m > lev, quiet) > target:
            break
        best = float(lev)
    return best


def calibrate_threshold(
    m: np.ndarray,
    n_events: int,
    budget: float,
    quiet: int,
    tests_per_event: float,
    min_count: int = 15,
) -> tuple[float, dict[str, Any]]:
    """Threshold on the per-window max score for a budget of ``budget`` events per false alarm.

    ``m`` is the max standardised score of every window close of a simulated null stream of
    ``n_events`` events (the reference resampled by caller). When the budget is small enough
    that the simulation holds at least ``min_count`` expected episodes, the threshold is the
    empirical one. Otherwise it is the Bonferroni bound ``P(|Z| > h) = 1 / (budget *
    tests_per_event)`` on the caller-aware standardised scores, and ``info`` reports the
    simulated effective number of tests per event ``rate(h) / P(|Z| > h)`` at the highest level
    the simulation can measure (how conservative the bound is).

    Returns
    -------
    threshold, info
        ``info`` is a JSON-serialisable summary for explanations.
    """
    target = n_events / budget
    if target >= min_count:
        h = _threshold_for_count(m, quiet, target)
        return h, {"method": "empirical", "simulated_events": n_events, "expected_episodes": target}
    # Beyond the simulation's reach: Bonferroni over all tests and closes. Extrapolating the
    # effective number of tests from a few simulated exceedances proved fragile (it can only be
    # anti-conservative when tests decorrelate in the far tail), so the bound is used as is; the
    # simulation still reports how conservative it is at the largest level it can measure.
    h = normal_threshold(budget, tests_per_event)
    h1 = _threshold_for_count(m, quiet, min_count)
    r1 = max(count_episodes(m > h1, quiet), 1) / n_events
    info = {
        "method": "bonferroni",
        "simulated_events": n_events,
        "bonferroni_tests_per_event": tests_per_event,
        "simulated_m_eff": r1 / max(two_sided_tail(h1), 1e-300),
        "simulated_level": h1,
    }
    return float(h), info


def normal_threshold(budget: float, tests_per_event: float) -> float:
    """Bonferroni threshold on ``|Z|`` (used for detectors without a caller-resampling null)."""
    p = 1.0 / (budget * tests_per_event)
    return float(-ndtri(p / 2.0))


def tilt_root_table(values: np.ndarray, probs: np.ndarray, n_grid: int = 257) -> tuple[float, float, np.ndarray]:
    """Signed root of the exponential-tilt deviance of a discrete score distribution, tabulated.

    For a score with reference distribution ``P(s = values[b]) = probs[b]`` and cumulant
    generating function ``K(t)``, the mean ``m`` of ``n`` independent scores has the tail
    ``P(mean >= m) ~ Phi(-sqrt(n) R(m))`` with ``R(m) = sign(m - mu) sqrt(2 sup_t (t m - K(t)))``
    (saddlepoint / large deviations; the binomial special case is :func:`signed_root_binomial`).
    Unlike the Wald score ``(m - mu) / sd`` this is accurate in the far tails of skewed scores.

    Returns ``(lo, hi, grid)``: ``R`` at ``n_grid`` equally spaced means from ``lo`` to ``hi``
    (the support's ends, where ``R^2 = -2 log P(s = end)`` is finite).

    >>> lo, hi, g = tilt_root_table(np.array([0.0, 1.0]), np.array([0.9, 0.1]), 5)
    >>> [round(float(v), 3) for v in g]  # equals signed_root_binomial(m, 0.1, 1)
    [-0.459, 0.43, 1.011, 1.543, 2.146]
    """
    keep = probs > 0
    s, p = values[keep].astype(np.float64), probs[keep] / probs[keep].sum()
    lo, hi = float(s.min()), float(s.max())
    grid_m = np.linspace(lo, hi, n_grid)
    if hi - lo < 1e-12:
        return lo, hi, np.zeros(n_grid)
    mu = float((s * p).sum())
    # tilts on a sinh-spaced grid reach means close to both ends of the support
    t = np.sinh(np.linspace(-12.0, 12.0, 1601)) / (hi - lo)
    a = t[:, None] * s[None, :]
    a_max = a.max(1, keepdims=True)
    e = p[None, :] * np.exp(a - a_max)
    k = np.log(e.sum(1)) + a_max[:, 0]
    m = (e * s[None, :]).sum(1) / e.sum(1)
    rate = np.maximum(t * m - k, 0.0)
    root = np.sign(m - mu) * np.sqrt(2.0 * rate)
    # the ends: all mass on the extreme value
    m_all = np.concatenate([[lo], m, [hi]])
    p_lo, p_hi = float(p[s == lo].sum()), float(p[s == hi].sum())
    r_all = np.concatenate([[-np.sqrt(-2.0 * np.log(p_lo))], root, [np.sqrt(-2.0 * np.log(p_hi))]])
    order = np.argsort(m_all, kind="stable")
    m_all, r_all = m_all[order], np.maximum.accumulate(r_all[order])
    return lo, hi, np.interp(grid_m, m_all, r_all)
