"""Threshold calibration on a null stream simulated by resampling the reference by caller run:
genomic-control factors of the joint tests and the threshold for the false-alarm budget."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import chdtri

from detectors.drift._stats import calibrate_threshold
from detectors.drift.callers import variance_codes
from detectors.drift.scan import CHUNK_BLOCKS, empty_state, scan_chunk, statistic
from detectors.drift.settings import DriftSettings

MIN_EPISODES = 15  # expected null episodes a simulation must hold to calibrate empirically


def calibrate(
    model: dict[str, Any],
    s: DriftSettings,
    bins: np.ndarray,
    codes: np.ndarray,
    seed: int,
) -> tuple[float, dict[str, Any]]:
    """Threshold and calibration record; sets the model's joint tests' ``group_gc`` and ``group_dof``.

    The null stream (``calibration_events``, at least 30 budgets up to 400,000 when the budget is
    small enough to calibrate empirically) repeats runs of consecutive events of one caller drawn
    with replacement from the reference (``bins``, ``codes``), seeded by ``seed``; it sets the
    joint tests' genomic-control factors and the threshold (see :func:`calibrate_threshold`).
    """
    rng = np.random.default_rng(seed)
    n_sim = null_events(s)
    res = simulate(model, s, bins, codes, rng, n_sim, live=False)
    fit_joint_gc(model, res)
    per_w, _, _ = statistic(model, res)
    stat = per_w.max(1)
    n_events = len(res["valid"]) * s.block_size
    n_tests = int(model["tested"].sum()) + len(model["group_names"])
    tests_per_event = n_tests * len(s.window_sizes) / s.block_size
    h, info = calibrate_threshold(stat, n_events, s.budget, s.quiet_windows, tests_per_event, MIN_EPISODES)
    info["seed"] = int(seed)
    info["single_tests"] = int(model["tested"].sum())
    info["joint_tests"] = {nm: {"dof": round(float(d), 2), "genomic_control": round(float(c), 4)}
                           for nm, d, c in zip(model["group_names"], model["group_dof"], model["group_gc"], strict=True)}
    return h, info


def null_events(s: DriftSettings) -> int:
    """Length of the simulated null stream: ``calibration_events``, raised to 30 budgets (at most
    400,000) when that makes the budget small enough to calibrate empirically."""
    if s.calibration_events < 30 * s.budget <= 400_000:
        return int(30 * s.budget)
    return s.calibration_events


def simulate(
    model: dict[str, Any], s: DriftSettings, bins: np.ndarray, codes: np.ndarray,
    rng: np.random.Generator, n_sim: int, live: bool,
) -> dict[str, Any]:
    """Scan a null stream of ``n_sim`` events: runs of consecutive events of one caller drawn with
    replacement from ``bins`` / ``codes`` (anonymous events in runs of ``anonymous_run``
    positions, their pseudo-callers, so serial dependence among them is resampled too)."""
    n = len(codes)
    vcodes = variance_codes(codes, s.anonymous_run)
    brk = np.flatnonzero(vcodes[1:] != vcodes[:-1]) + 1
    starts = np.concatenate([[0], brk])
    ends = np.concatenate([brk, [n]])
    lens = ends - starts
    n_draw = int(n_sim / lens.mean() * 1.2) + 10
    pick = rng.integers(0, len(starts), size=n_draw)
    tot = np.cumsum(lens[pick])
    pick = pick[: int(np.searchsorted(tot, n_sim)) + 1]
    idx = np.concatenate([np.arange(starts[p], ends[p]) for p in pick])[:n_sim]
    step = s.block_size
    idx = idx[: (len(idx) // step) * step]
    sim_codes = codes[idx].copy()
    anon = sim_codes < 0
    sim_codes[anon] = -(np.flatnonzero(anon) + 1)
    sim_bins = bins[idx]
    state = empty_state(model, s.n_bins_total)
    parts: list[dict[str, Any]] = []
    chunk = CHUNK_BLOCKS * step
    for c0 in range(0, len(idx), chunk):
        res, state = scan_chunk(model, s, sim_bins[c0 : c0 + chunk], sim_codes[c0 : c0 + chunk], state, live, False)
        parts.append(res)
    return {k: np.concatenate([p[k] for p in parts]) for k in ("single", "q", "valid")}


def fit_joint_gc(model: dict[str, Any], res: dict[str, Any]) -> None:
    """Genomic control: deflate a joint test whose simulated null is wider than chi-square
    (sets ``group_gc`` and, for the covariance test, a Satterthwaite ``group_dof``)."""
    m = model
    valid = res["valid"]
    gc = np.ones(len(m["group_names"]))
    dofs = m["group_dof"].copy()
    for g, dof in enumerate(dofs):
        qv = res["q"][..., g][valid]
        if not qv.size:
            continue
        if m["group_names"][g] == "inputs:covariance":
            qv = qv[qv > 0]  # windows with too few kept events are not tested
            if not qv.size:
                continue
            # Satterthwaite: scale and dof matching the simulated mean and variance, never
            # narrower than the nominal chi-square (products of whitened scores are not
            # independent on non-Gaussian data). The mean never drops below the nominal one:
            # a window of the resampled reference holds a large share of a small reference's
            # callers, and the caller cap drops repeat draws, so long simulated windows sit
            # closer to the reference than live ones do (measured at 16 features, 2,000-event
            # reference: simulated mean 130 -> 114 from 100- to 1,000-event windows, live 139,
            # nominal 136; docs/drift.md, "Covariance test: its null on a young reference")
            mean, var = max(float(qv.mean()), dof), float(qv.var())
            if mean > dof or var > 2 * dof:
                scale = max(var / (2 * mean), 1.0)
                gc[g], dofs[g] = scale, max(mean / scale, 1.0)
            # and the far tail: if the simulated 99.9% point lies beyond the fitted scaled
            # chi-square's, widen the scale until they agree (heavy-tailed products)
            tail = float(np.quantile(qv, 0.999)) / (gc[g] * float(chdtri(dofs[g], 0.001)))
            gc[g] *= max(tail, 1.0)
        else:
            gc[g] = max(1.0, float(np.median(qv)) / float(chdtri(dof, 0.5)))
    m["group_gc"] = gc
    m["group_dof"] = dofs
