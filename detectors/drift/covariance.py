"""The covariance test ``inputs:covariance``: reference fit of the whitened second moments of
Gaussianised inputs, the whitening of live events, and the windows' raw statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtri

from detectors.drift.callers import anonymous_caps, between_caller_variance, caller_square_sums, keep_mask
from detectors.drift.settings import DriftSettings


def fit_covariance(
    bins: np.ndarray, codes: np.ndarray, vcodes: np.ndarray, model: dict[str, Any], d: int, s: DriftSettings
) -> None:
    """The covariance test ``inputs:covariance``: second moments of Gaussianised, whitened inputs.

    Every numeric feature is Gaussianised by its reference quantiles (normal score of the bin's
    reference mid-rank, missing = 0), which makes heavy tails, counts and ratios harmless; the
    scores ``g`` are whitened with their reference second-moment matrix (top ``cov_dims``
    eigen-directions, eigenvalues below 1e-3 of the largest dropped): ``y = W g`` has identity
    second moments on the reference. The test asks whether a window's mean of ``y y^T`` (its
    ``r (r + 1) / 2`` distinct products) still matches the reference: the sum of the products'
    squared caller-aware z-scores, i.e. a variance-weighted Frobenius distance of the window's
    whitened covariance from the reference's, referred to a scaled chi-square whose scale and
    degrees of freedom match the mean and variance of the statistic on the caller-resampled null
    stream (Satterthwaite). ``g`` sits on a 2^-6 grid, ``W`` on 2^-10 and ``y`` on 2^-8, so
    every sum of products is exact in float64 and independent of how batches were cut.

    Robustness to one caller: every statistic of this test (reference moments, window sums,
    variance model) uses only each caller's first event in every super-block of
    ``cov_caller_blocks * block_size`` events. Under the ordinary cap a persistent caller still
    holds ~2% of a window, and products of its near-identical, atypical points all move the
    second moments the same way (a black-box boundary walk moved the statistic from z ~0.3 to
    z ~6 that way); with one event per super-block its share, and its push, is several times
    smaller, while ordinary callers lose little.
    """
    model["cov_r"] = 0
    if d < 2 or s.cov_dims == 0:
        return
    nb = s.n_bins_total
    kept = keep_mask(codes, s.cov_step, 1, anon_cap=anonymous_caps(model, s.cov_caller_blocks, s.cov_step)[1])
    w = kept.astype(np.float64)
    sw = float(w.sum())
    gtab = np.zeros((d, nb))
    for c in range(d):
        cnt = np.bincount(bins[:, c], weights=w, minlength=nb)[: nb - 1]
        tot = float(cnt.sum())
        if tot <= 0:
            continue
        u = (np.cumsum(cnt) - 0.5 * cnt) / tot
        gtab[c, : nb - 1] = ndtri(np.clip(u, 1e-4, 1 - 1e-4))
    gtab = np.round(gtab * 64.0) / 64.0
    G = gtab[np.arange(d)[None, :], bins[:, :d]]
    M2 = (G * w[:, None]).T @ G / sw
    evals, evecs = np.linalg.eigh(M2)
    if float(evals.max()) <= 1e-9:
        return
    order = np.argsort(-evals)
    order = order[evals[order] > 1e-3 * float(evals.max())][: s.cov_dims]
    r = len(order)
    if r < 2:
        return
    Wc = np.round(evecs[:, order] / np.sqrt(evals[order]) * 1024.0) / 1024.0
    iu = np.triu_indices(r)
    model.update(
        cov_r=r,
        cov_gtab=gtab,
        cov_w=Wc,
        cov_a=evecs[:, order] * np.sqrt(evals[order]),
        cov_ref=M2,
        cov_iu=np.vstack(iu).astype(np.int64),
    )
    # influence bound: an event's whitened vector is shrunk to the reference's 90% quantile of
    # |y|^2, so the products of one atypical event (|y y^T| = |y|^2) cannot dominate a window
    model["cov_c2"] = np.inf
    y2 = (whitened(bins[kept], model) ** 2).sum(1)
    model["cov_c2"] = float(np.ceil(np.quantile(y2, s.cov_clip_quantile)))
    fit_cov_moments(bins, codes, vcodes, model, s)
    model["group_names"] = [*model["group_names"], "inputs:covariance"]
    model["group_dof"] = np.append(model["group_dof"], float(len(iu[0])))
    model["group_gc"] = np.append(model["group_gc"], 1.0)


def fit_cov_moments(
    bins: np.ndarray, codes: np.ndarray, vcodes: np.ndarray, model: dict[str, Any], s: DriftSettings,
    min_rho: float = 0.0,
) -> None:
    """The covariance test's reference moments on ``bins`` (whitening and clipping as fitted): the
    products' means, variances and between-caller share (at least ``min_rho``), and the
    reference's own error."""
    kept = keep_mask(codes, s.cov_step, 1, anon_cap=anonymous_caps(model, s.cov_caller_blocks, s.cov_step)[1])
    a_ref = float(caller_square_sums(vcodes, kept, np.array([len(codes)]), len(codes))[0])
    w = kept.astype(np.float64)
    sw = float(w.sum())
    iu = model["cov_iu"]
    Y = whitened(bins, model)
    P = Y[:, iu[0]] * Y[:, iu[1]]
    mu = (w[:, None] * P).sum(0) / sw
    var = np.maximum((w[:, None] * (P - mu) ** 2).sum(0) / sw, 1e-6)
    # one between-caller share for the whole test (the median of the products' ANOVA shares):
    # then each product's window variance is var_k * c(window) and the statistic is a plain
    # sum of squares of pre-scaled products, the cheap form needed at 2,000 products
    share = between_caller_variance(P[kept], vcodes[kept], var) / var
    rho = float(np.clip(max(float(np.median(share)), min_rho), s.min_caller_correlation, 1.0))
    c_ref = (rho * a_ref + (1.0 - rho) * sw) / sw**2
    isd = 1.0 / np.sqrt(var)
    model.update(cov_mu=mu * isd, cov_isd=isd, cov_rho=rho, cov_cref=c_ref)


def whitened(bins: np.ndarray, model: dict[str, Any]) -> np.ndarray:
    """Whitened Gaussian scores ``y`` (n x r) on a 2^-8 grid, clipped to +-8 (exact products).

    Rows with ``|y|^2 > cov_c2`` are shrunk onto that sphere (before the final rounding), which
    bounds every event's contribution to the second moments. Each row's scale depends on that
    row alone, so the result does not depend on how the stream was cut into batches.
    """
    d = model["d"]
    nb = model["cov_gtab"].shape[1]
    G = np.take(model["cov_gtab"].ravel(), bins[:, :d] + np.arange(0, d * nb, nb))
    # G and W are on coarse grids, so this product is exact whatever the BLAS blocking
    Y = G @ model["cov_w"]
    n2 = np.einsum("ij,ij->i", Y, Y)
    shrink = np.sqrt(np.minimum(1.0, model["cov_c2"] / np.maximum(n2, 1e-12)))
    # in place; scaling by powers of two is exact, so this equals round(Y * shrink * 256) / 256
    Y *= (shrink * 256.0)[:, None]
    np.round(Y, out=Y)
    Y *= 1.0 / 256.0
    return np.clip(Y, -8.0, 8.0, out=Y)


def cov_q(model: dict[str, Any], colsum: np.ndarray, sw: np.ndarray, a: np.ndarray, live: bool) -> np.ndarray:
    """Raw covariance statistics (sum of squared product z-scores) for windows (k x products)."""
    m = model
    swc = np.maximum(sw, 1.0)
    rho = m["cov_rho"]
    c = (rho * a + (1.0 - rho) * swc) / swc**2 + (m["cov_cref"] if live else 0.0)
    # exact window sums, scaled only here (so nothing depends on how blocks were accumulated)
    dev = colsum * m["cov_isd"]
    dev *= (1.0 / swc)[:, None]
    dev -= m["cov_mu"]
    return np.asarray(np.einsum("kp,kp->k", dev, dev) / c)
