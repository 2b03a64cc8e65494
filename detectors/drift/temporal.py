"""Between-time variance: how much the reference's consecutive time blocks vary beyond the caller
model (per score column, and jointly per test as a genomic-control factor)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import chdtrc

from detectors.drift.callers import caller_square_sums_multi


def between_time_variance(
    S: np.ndarray,
    kept: np.ndarray,
    vcodes: np.ndarray,
    tau2: np.ndarray,
    sigw: np.ndarray,
    block_size: int,
    temporal_block: int,
) -> tuple[np.ndarray, dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Per score column, the variance of the mean between consecutive time blocks of the reference
    beyond what the caller model explains, and the live-window variance it adds (with the time
    blocks' statistics, see :func:`time_block_stats`, or ``None`` when there are too few).

    Events close in time are not independent samples either (the time-of-day mix of regions or
    sites, sessions), just as one caller's events are not. The reference (in stream order) is
    cut into ``nb`` blocks of ``B`` positions (``temporal_block``, default the largest window;
    smaller if the reference holds fewer than 8 such blocks, never below ``block_size``). With
    ``m_b`` a block's mean score over its kept events and ``e_b = (tau2 a_b + sigw n_b) / n_b^2``
    its variance under the caller model (``n_b`` kept events, ``a_b = sum_g K_g^2``), the
    moment estimate is ``t = sum_b (m_b - mean m)^2 / (nb - 1) - mean e_b``. It counts only
    where ``(nb - 1) D / mean e_b`` exceeds the chi-square(``nb - 1``) quantile at 0.01 divided
    by the number of columns (Bonferroni: a reference without temporal structure gives 0 for
    every column with probability ~99%, so detection is unchanged there). A block effect does
    not shrink with a window's event count, so ``t (1 + 1 / nb)`` (the block effect of the
    window and that of the reference mean) is added to every live window's variance. It is not
    added in the calibration: the caller-resampled null stream has no temporal structure.
    """
    n, ncol = S.shape
    step = block_size
    info: dict[str, Any] = {"block_events": 0, "blocks": 0, "columns": 0}
    if temporal_block <= 0:
        return np.zeros(ncol), info, None
    B = step * max(1, min(temporal_block // step, n // (8 * step)))
    nb = n // B
    info.update(block_events=int(B), blocks=int(nb))
    if nb < 4:
        return np.zeros(ncol), info, None
    sums, n_b, a_b = time_block_stats(S, kept, vcodes, B)
    if n_b.min() < 2:
        return np.zeros(ncol), info, None
    taut = temporal_estimate(sums, n_b, a_b, tau2, sigw)
    info["columns"] = int((taut > 0).sum())
    return taut, info, (sums, n_b, a_b)


def time_block_stats(
    S: np.ndarray, kept: np.ndarray, vcodes: np.ndarray, B: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score sums, kept counts and ``sum_g K_g^2`` of the kept events in each complete time block
    of ``B`` positions of a reference (score matrix ``S``, in stream order)."""
    nb = len(kept) // B
    ends = B * (1 + np.arange(nb))
    a_b = caller_square_sums_multi(vcodes, kept, ends, (B,))[0][:, 0]
    kw = kept[: nb * B].reshape(nb, B).astype(np.float64)
    sums = np.einsum("bi,bic->bc", kw, S[: nb * B].reshape(nb, B, S.shape[1]))
    return sums, kw.sum(1), a_b


def temporal_gc(model: dict[str, Any], sums: np.ndarray, n_b: np.ndarray, a_b: np.ndarray) -> np.ndarray:
    """Per joint test, the factor by which time blocks' joint statistics exceed chi-square.

    The per-column between-time variance only counts where one column's block means vary
    significantly; a time-of-day mix that moves many correlated scores a little each (a class
    mix, a site offset) shows only jointly. Each reference time block's standardised deviation
    from the reference mean (caller model plus the per-column component) is whitened like a
    live window, and if the groups' block statistics sum beyond the chi-square((nb - 1) dof)
    quantile at 0.01, their ratio to it deflates that joint test (genomic control from time
    blocks; 1 otherwise and for the covariance test).
    """
    m = model
    nb = len(n_b)
    lam = np.ones(len(m["group_names"]))
    if nb < 4 or n_b.min() < 2:
        return lam
    mean = sums / n_b[:, None]
    e_b = (m["tau2"][None, :] * a_b[:, None] + m["sigw"][None, :] * n_b[:, None]) / n_b[:, None] ** 2
    z = (mean - m["mu"]) / np.sqrt(e_b + m["taut"][None, :])
    for g, (cols, W) in enumerate(zip(m["group_cols"], m["group_maps"], strict=True)):
        tot = float((np.einsum("bc,rc->br", z[:, cols], W) ** 2).sum())
        dof = (nb - 1) * W.shape[0]
        if chdtrc(dof, tot) < 0.01:
            lam[g] = tot / dof
    return lam


def temporal_estimate(
    sums: np.ndarray, n_b: np.ndarray, a_b: np.ndarray, tau2: np.ndarray, sigw: np.ndarray
) -> np.ndarray:
    """The between-time variance ``t (1 + 1 / nb)`` from time blocks' score sums, kept counts
    and ``sum_g K_g^2`` (see :func:`between_time_variance`)."""
    nb, ncol = sums.shape
    m_b = sums / n_b[:, None]
    e_b = (tau2[None, :] * a_b[:, None] + sigw[None, :] * n_b[:, None]) / n_b[:, None] ** 2
    dev = ((m_b - m_b.mean(0)) ** 2).sum(0) / (nb - 1)
    e_mean = np.maximum(e_b.mean(0), 1e-300)
    p = chdtrc(nb - 1, (nb - 1) * dev / e_mean)
    sig = p < 0.01 / ncol
    return np.asarray(np.where(sig, np.maximum(dev - e_mean, 0.0), 0.0) * (1.0 + 1.0 / nb))
