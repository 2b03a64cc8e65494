"""Window score sums to z-scores: tabulated tilt roots (accurate tails), caller-aware Wald and
binomial scores of the single tests, and the joint tests' chi-square statistics as |z|."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import chdtrc, ndtri

from detectors.drift._stats import signed_root_binomial, tilt_root_table

LINEAR, INDICATOR = 0, 1  # score column kinds: a linear score table, a 0/1 indicator of one bin
GRID = float(2**20)  # scores sit on a 2^-20 grid, so sums of up to 2^30 of them are exact
TILT_GRID = 513  # points of a tabulated tilt root


def fit_tilt(counts: np.ndarray, model: dict[str, Any]) -> None:
    """Tabulated tilt roots (accurate tails) of every linear score column (location, spread).

    The Wald score ``(mean - mu) / sd`` of a window mean misjudges the far tail of a skewed
    score: for the squared normal score of the spread channel, Wald |z| = 5.83 on 50 events is
    really |z| ~ 5.2 upwards (40x more false alarms) and ~ 13 downwards; for the bounded
    mid-rank location score it is conservative (really ~ 6.1). The signed root of the reference
    score distribution's exponential-tilt deviance, scaled by the window's effective size
    ``var / v`` (``v`` from the caller-aware variance model), is accurate for ``var / v``
    independent events (see :func:`tilt_root_table`). A column's score is the *less* extreme
    of the two: the tilt root corrects Wald where Wald overstates the evidence (a spread
    increase), and Wald is kept where the tilt root would exceed it (the bounded location
    score, a spread decrease), because between-caller variation makes real window means
    closer to normal than ``var / v`` independent draws.
    """
    labels, chan, tab = model["labels"], model["chan"], model["tab"]
    cols, los, invs, grids = [], [], [], []
    for k, lab in enumerate(labels):
        if lab not in ("location", "spread") or model["kind"][k] != LINEAR:
            continue
        cnt = counts[chan[k]]
        lo_k, hi_k, g = tilt_root_table(tab[k], cnt, TILT_GRID)
        if hi_k <= lo_k:
            continue
        # a column whose tilt root is nowhere less extreme than Wald (by more than 1%) keeps
        # Wald: no table (the mid-rank location score of a continuous channel is ~uniform:
        # lighter tails; a grown reference makes it only nearly uniform)
        p = cnt / cnt.sum()
        sd = float(np.sqrt((p * (tab[k] - (p * tab[k]).sum()) ** 2).sum()))
        wald = (np.linspace(lo_k, hi_k, TILT_GRID) - model["mu"][k]) / max(sd, 1e-12)
        if np.all(np.abs(g) >= np.abs(wald) * 0.99):
            continue
        cols.append(k)
        los.append(lo_k)
        invs.append((TILT_GRID - 1) / (hi_k - lo_k))
        grids.append(g)
    model.update(
        tilt_cols=np.array(cols, dtype=np.int64),
        tilt_lo=np.array(los),
        tilt_inv=np.array(invs),
        tilt_grid=np.array(grids).reshape(len(cols), TILT_GRID),
    )


def tilt_z(model: dict[str, Any], mean: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Tilt-root scores of the ``tilt_cols`` columns: ``sqrt(var / v) R(mean)`` (k x columns)."""
    m = model
    cols = m["tilt_cols"]
    pos = np.clip((mean - m["tilt_lo"]) * m["tilt_inv"], 0.0, TILT_GRID - 1.0)
    i = np.minimum(pos.astype(np.int64), TILT_GRID - 2)
    f = pos - i
    i += (np.arange(len(cols)) * TILT_GRID)[None, :]
    g = m["tilt_grid"].ravel()
    r = g[i] * (1.0 - f) + g[i + 1] * f
    return np.asarray(np.sqrt((m["tau2"][cols] + m["sigw"][cols]) / v) * r)


def window_z(
    model: dict[str, Any], colsum: np.ndarray, sw: np.ndarray, a: np.ndarray, live: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of all columns for ``k`` windows (``colsum``: k x columns, score sums of kept events).

    Returns ``(z, zw)``: ``zw`` are Wald scores ``(mean - mu) / sd`` (used by the joint tests);
    ``z`` replaces the indicator columns' Wald scores by the signed-root binomial LR (accurate
    tails for rare categories and missing rates; used by the single tests).
    """
    m = model
    swc = np.maximum(sw, 1.0)[:, None]
    mean = colsum / swc
    v = (m["tau2"] * a[:, None] + m["sigw"] * swc) / swc**2
    if live:
        v = v + m["vref"]
    zw = (mean - m["mu"]) / np.sqrt(v)
    tc = m["tilt_cols"]
    if len(tc):  # never beyond the tilt root (skewed scores' tails); the joint tests use it too
        zt = tilt_z(m, mean[:, tc], v[:, tc])
        zw[:, tc] = np.where(np.abs(zt) < np.abs(zw[:, tc]), zt, zw[:, tc])
    z = zw.copy()
    ind = m["kind"] == INDICATOR
    if ind.any():
        p = m["mu"][ind]
        z[:, ind] = signed_root_binomial(mean[:, ind], p, p * (1 - p) / v[:, ind])
    return z, zw


def joint_q(model: dict[str, Any], zw: np.ndarray) -> np.ndarray:
    """Raw joint statistics ``|W_g z_g|^2`` (k x groups)."""
    m = model
    q = np.zeros((zw.shape[0], len(m["group_names"])))
    for g, (cols, W) in enumerate(zip(m["group_cols"], m["group_maps"], strict=True)):  # linear groups first
        y = np.einsum("kc,rc->kr", zw[:, cols], W)
        q[:, g] = (y**2).sum(1)
    return q


def joint_z(model: dict[str, Any], q: np.ndarray) -> np.ndarray:
    """Joint statistics as |z|, after their genomic-control factors."""
    m = model
    if q.shape[-1] == 0:
        return q
    return chi2_to_z(q / m["group_gc"], m["group_dof"])


def chi2_to_z(q: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """|z| with the same two-sided tail as ``q`` under chi-square(``dof``) (capped at 38)."""
    p = chdtrc(dof, np.maximum(q, 0.0))
    z = -ndtri(np.maximum(p, 1e-300) / 2.0)
    # beyond double precision the tail is astronomically small: keep ordering with Wilson-Hilferty
    wh = ((np.maximum(q, 0.0) / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / np.sqrt(2 / (9 * dof))
    return np.asarray(np.where(p > 1e-290, z, np.minimum(np.maximum(wh, z), 38.0)))
