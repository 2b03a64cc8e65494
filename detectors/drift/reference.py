"""The reference fit: channels, bins, score tables, caller-aware moments, single and joint tests
(see ``docs/drift.md``); and the fitted model's restoration from a snapshot."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from detectors.drift._stats import weighted_quantiles
from detectors.drift.callers import (
    anonymous_cap,
    anonymous_caps,
    between_caller_variance,
    caller_square_sums,
    keep_mask,
    variance_codes,
)
from detectors.drift.channels import (
    OUTPUTS,
    assign_bins,
    categorical_names,
    numeric_matrix,
    numeric_names,
    robust_scale,
    select_classes,
)
from detectors.drift.covariance import fit_cov_moments, fit_covariance
from detectors.drift.growth import ReferenceGrowth
from detectors.drift.scores import GRID, INDICATOR, LINEAR, TILT_GRID, fit_tilt
from detectors.drift.settings import DriftSettings
from detectors.drift.summaries import prob_mean, summaries
from detectors.drift.temporal import between_time_variance, temporal_estimate
from pipeline.events import FeatureSchema


@dataclass(frozen=True, slots=True)
class ReferenceFit:
    """A fitted reference: the ``model`` (a plain dict, as snapshotted) and the reference events'
    ``bins``, score matrix ``scores``, ``kept`` flags, variance caller codes ``vcodes`` and time
    blocks' statistics (``None`` when too few), which calibration and growth start from."""

    model: dict[str, Any]
    bins: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    vcodes: np.ndarray
    time_blocks: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def bin_levels(n_bins: int, span: float) -> np.ndarray:
    """Quantile levels of the ``n_bins - 1`` bin edges: ``Phi`` of evenly spaced normal scores on
    ``[-span, span]`` (finer in the tails), or equal probabilities when ``span`` is 0.

    Binned at equal probabilities (16 bins), the spread score keeps 80% of the information a
    normal scale change carries; with ``span=2.33`` it keeps 95%, the location score's 95% is
    unchanged (``docs/drift.md``, "Tail-refined bins").

    >>> bin_levels(4, 0.0)
    array([0.25, 0.5 , 0.75])
    >>> bin_levels(3, 2.33).round(4)
    array([0.0099, 0.9901])
    """
    if span <= 0:
        return np.arange(1, n_bins) / n_bins
    return np.asarray(ndtr(np.linspace(-span, span, n_bins - 1)))


def fit_reference(
    X: np.ndarray,
    C: np.ndarray,
    pred: list[str] | None,
    pval: np.ndarray,
    outs: np.ndarray,
    codes: np.ndarray,
    ts: np.ndarray,
    source: str,
    probs: np.ndarray | None,
    *,
    s: DriftSettings,
    schema: FeatureSchema,
    classes: tuple[str, ...] | None,
) -> ReferenceFit:
    """Fit the reference model (everything but the threshold) from the reference events."""
    n, d = X.shape
    anon_cap = anonymous_cap(codes, s.block_size, s.block_cap, s.anonymous_share)
    kept = keep_mask(codes, s.block_size, s.block_cap, anon_cap=anon_cap)
    w = kept.astype(np.float64)
    sw = float(w.sum())
    vcodes = variance_codes(codes, s.anonymous_run)
    a_ref = float(caller_square_sums(vcodes, kept, np.array([n]), n)[0])
    model: dict[str, Any] = {"d": d, "k": C.shape[1], "source": source, "anon_cap": anon_cap}
    model["ref_period"] = {"start": float(ts.min()), "end": float(ts.max()), "n": int(n), "source": source}

    # multivariate projection: robust scaling, winsorising, weighted covariance, eigenvectors
    ncomp = 0
    if d >= 2 and s.n_components > 0:
        with warnings.catch_warnings():  # an all-missing feature: NaN here, scale 1 below
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(X, axis=0)
            mad = np.nanmedian(np.abs(X - med), axis=0) * 1.4826
            sd = np.nanstd(X, axis=0)
        scale = np.where(mad > 1e-12, mad, np.where(sd > 1e-12, sd, 1.0))
        Z = robust_scale(X, med, scale)
        cov = (Z * w[:, None]).T @ Z / w.sum()
        evals, evecs = np.linalg.eigh(cov)
        evals = np.maximum(evals, 1e-9 * max(float(evals.max()), 1e-12))
        k = min(s.n_components, d - 1)
        idx = np.arange(d - 1, d - 1 - k, -1)
        model.update(pca_med=med, pca_scale=scale, pca_isd=1.0 / np.sqrt(evals[idx]), pca_basis=evecs[:, idx].copy())
        ncomp = k
    model["ncomp"] = ncomp

    has_out = [bool(np.isfinite(outs[:, j]).mean() > 0.5) for j in range(3)]
    model["has_out"] = has_out
    # prediction: categorical, or numeric for regression-like outputs
    pred_numeric = False
    if pred is not None:
        finite = np.isfinite(pval)
        if finite.mean() > 0.99 and len(set(pred)) > s.max_categories:
            pred_numeric = True
    model["pred_kind"] = "none" if pred is None else ("numeric" if pred_numeric else "categorical")
    model["prob_cols"], model["prob_classes"] = select_classes(probs, w, classes, s.max_class_channels)

    names: list[str] = [f"feature:{nm}" for nm in numeric_names(schema, d)]
    names += [f"output:{o}" for o, h in zip(OUTPUTS, has_out, strict=True) if h]
    names += [f"output:P({c})" for c in model["prob_classes"]]
    if pred_numeric:
        names.append("output:prediction")
    names += [f"multivariate:pc{j}" for j in range(ncomp)]
    if ncomp:
        names += ["multivariate:norm", "multivariate:residual"]
    n_num = len(names)
    model["n_num"] = n_num
    Zn = numeric_matrix(X, outs, pval, model, probs)

    # numeric bins from weighted reference quantiles
    q = s.n_bins
    levels = bin_levels(q, s.bin_span)
    edges = np.full((n_num, q - 1), np.inf)
    lo_hi = np.zeros((n_num, 2))
    ref_loc = np.full(n_num, np.nan)
    ref_spread = np.full(n_num, np.nan)
    for c in range(n_num):
        col = Zn[:, c]
        e = np.unique(weighted_quantiles(col, w, levels))
        e = e[np.isfinite(e)]
        edges[c, : len(e)] = e
        qq = weighted_quantiles(col, w, np.array([0.005, 0.25, 0.5, 0.75, 0.995]))
        lo_hi[c] = (qq[0], qq[4])
        ref_loc[c] = qq[2]
        ref_spread[c] = (qq[3] - qq[1]) / 1.349
    model.update(edges=edges, lo_hi=lo_hi, ref_loc=ref_loc, ref_spread=ref_spread)
    model["prob_chan0"] = names.index(f"output:P({model['prob_classes'][0]})") if model["prob_classes"] else -1

    # categorical channels: string features, then the predicted class
    cat_maps: list[dict[str, int]] = []
    cat_labels: list[list[str]] = []
    cat_cols: list[list[Any]] = [list(C[:, j]) for j in range(C.shape[1])]
    cat_names = [f"categorical:{nm}" for nm in categorical_names(schema, C.shape[1])]
    if pred is not None and not pred_numeric:
        cat_cols.append(list(pred))
        cat_names.append("output:prediction")
    for cat_col in cat_cols:
        freq: dict[str, float] = {}
        for v, wi in zip(cat_col, w, strict=True):
            if v is not None:
                key = str(v)
                freq[key] = freq.get(key, 0.0) + float(wi)
        total = float(w.sum())
        keep = sorted(
            (c for c in freq if freq[c] / total >= s.min_category_freq), key=lambda c: (-freq[c], c)
        )[: s.max_categories]
        cat_maps.append({c: i for i, c in enumerate(keep)})
        cat_labels.append(keep)
    model.update(cat_maps=cat_maps, cat_labels=cat_labels)
    names += cat_names
    model["names"] = names

    bins = assign_bins(Zn, C, pred, model, s.missing_bin)
    # class probabilities: per-bin reference mean probabilities. They are the channels'
    # location score (the window mean then estimates the mean posterior, which moves with the
    # class prior; a mid-rank score would spend its variance on ranking near-zero probabilities)
    # and give an explanation's current mean probability from the window's bin counts
    npc = len(model["prob_classes"])
    binmean = np.zeros((npc, q))
    ref_pmean = np.full(npc, np.nan)
    for i in range(npc):
        c = model["prob_chan0"] + i
        ok = (bins[:, c] < q) & (w > 0)
        cnt = np.bincount(bins[ok, c], minlength=q)[:q]
        tot = np.bincount(bins[ok, c], weights=Zn[ok, c], minlength=q)[:q]
        lo_e = np.concatenate([[lo_hi[c, 0]], edges[c]])
        hi_e = np.concatenate([edges[c], [lo_hi[c, 1]]])
        hi_e = np.where(np.isfinite(hi_e), hi_e, lo_hi[c, 1])
        lo_e = np.where(np.isfinite(lo_e), lo_e, hi_e)
        mid = np.clip(0.5 * (lo_e + hi_e), 0.0, 1.0)  # bins empty in the reference
        binmean[i] = np.where(cnt > 0, tot / np.maximum(cnt, 1), mid)
        ref_pmean[i] = float(Zn[ok, c].mean()) if ok.any() else np.nan
    model.update(prob_binmean=binmean, prob_refmean=ref_pmean)

    # score columns: (channel, table over bins, kind, label)
    nb = s.n_bins_total
    tables: list[np.ndarray] = []
    chans: list[int] = []
    kinds: list[int] = []
    labels: list[str] = []
    ref_p = np.zeros((n_num, q))
    for c in range(n_num):
        cnt = np.bincount(bins[:, c], weights=w, minlength=nb) / w.sum()
        p_obs = cnt[: nb - 1].sum()
        ref_p[c] = cnt[:q] / max(p_obs, 1e-12)
        if p_obs > 0:
            u = (np.cumsum(cnt[: nb - 1]) - 0.5 * cnt[: nb - 1]) / p_obs
        else:
            u = np.full(nb - 1, 0.5)
        loc = np.append(u - 0.5, 0.0)
        if 0 <= c - model["prob_chan0"] < npc:
            loc = np.append(binmean[c - model["prob_chan0"]], np.zeros(nb - 1 - q + 1))[:nb]
        if s.spread_score == "normal":  # Klotz-type: squared normal score of the mid-rank
            spr = np.append(ndtri(np.clip(u, 1e-4, 1 - 1e-4)) ** 2, 0.0)
        else:  # Ansari-Bradley-type
            spr = np.append(np.abs(2 * u - 1), 0.0)
        for tab, lab in ((loc, "location"), (spr, "spread")):
            mu_obs = float((tab[: nb - 1] * cnt[: nb - 1]).sum() / max(p_obs, 1e-12))
            tab = tab.copy()
            tab[nb - 1] = mu_obs  # a missing value is neutral for location and spread
            tables.append(tab)
            chans.append(c)
            kinds.append(LINEAR)
            labels.append(lab)
        if c < d or (names[c].startswith("output:") and not names[c].startswith("output:P(")):
            miss = np.zeros(nb)
            miss[nb - 1] = 1.0
            tables.append(miss)
            chans.append(c)
            kinds.append(INDICATOR)
            labels.append("missing")
    for j, keep in enumerate(cat_labels):
        c = n_num + j
        for i, lab in enumerate([*keep, "<other>", "<missing>"]):
            ind = np.zeros(nb)
            ind[i if i < len(keep) + 1 else nb - 1] = 1.0
            tables.append(ind)
            chans.append(c)
            kinds.append(INDICATOR)
            labels.append(f"category={lab}")
    # scores on a 2^-20 grid: sums of up to 2^30 of them are exact in float64, so per-block
    # score sums can be accumulated across blocks without any dependence on batch cuts
    tab = np.round(np.array(tables) * GRID) / GRID
    chan = np.array(chans, dtype=np.int64)
    kind = np.array(kinds, dtype=np.int64)

    # reference moments of the kept events; between-caller variance by ANOVA moments
    S = tab[np.arange(len(chan))[None, :], bins[:, chan]]
    mu = (w[:, None] * S).sum(0) / sw
    floor_p = 0.5 / n
    ind = kind == INDICATOR
    mu = np.where(ind, np.clip(mu, floor_p, 1 - floor_p), mu)
    var = (w[:, None] * (S - mu) ** 2).sum(0) / sw
    var = np.where(ind, mu * (1 - mu), np.maximum(var, 0.25 / n))
    tau2 = between_caller_variance(S[kept], vcodes[kept], var)
    tau2 = np.clip(tau2, s.min_caller_correlation * var, var)
    sig_w = np.maximum(var - tau2, 0.0)
    vref = (tau2 * a_ref + sig_w * sw) / sw**2
    # between-time variance (time-of-day mix, sessions): added to every live window's variance
    taut, model["temporal"], time_blocks = between_time_variance(
        S, kept, vcodes, tau2, sig_w, s.block_size, s.temporal_block
    )
    vref = vref + taut
    model["taut"] = taut
    model.update(ref_p=ref_p, tab=tab, chan=chan, kind=kind, labels=labels, mu=mu, tau2=tau2, sigw=sig_w, vref=vref)
    # kept events' bin counts per channel (the reference distribution every moment derives
    # from) and each column's between-caller share, for refits when the reference grows
    nch = len(names)
    kidx = np.flatnonzero(kept)
    flat = np.arange(nch, dtype=np.int64)[None, :] * nb + bins[kidx]
    ref_counts = np.bincount(flat.ravel(), minlength=nch * nb).reshape(nch, nb).astype(np.float64)
    model.update(ref_counts=ref_counts, rho=tau2 / np.maximum(var, 1e-300), tilt_n=int(n))
    fit_tilt(ref_counts, model)
    fit_tests(S[kept], model, d)
    fit_covariance(bins, codes, vcodes, model, d, s)
    return ReferenceFit(model, bins, S, kept, vcodes, time_blocks)


def fit_tests(S: np.ndarray, model: dict[str, Any], d: int) -> None:
    """Which columns are single tests, and the joint tests (column groups with whitening maps).

    A joint test's statistic is ``|W z|^2`` for the group's standardised scores ``z``, with
    ``W`` the inverse square root of their reference correlation (eigenvalues below 1e-3 of
    the largest are dropped, so collinear columns such as the indicators of all categories,
    which sum to one, cost no degree of freedom).
    """
    labels, chan, names = model["labels"], model["chan"], model["names"]
    ncol = len(labels)
    is_cat = np.array([lab.startswith("category=") for lab in labels])
    rare = np.array([lab in ("category=<other>", "category=<missing>") for lab in labels])
    # single tests: every column except the frequent categories (those are tested jointly)
    model["tested"] = ~is_cat | rare
    groups: list[tuple[str, np.ndarray]] = []
    col = np.arange(ncol)
    lab = np.array(labels)
    is_in = chan < d
    if d >= 2:
        groups.append(("inputs:location", col[is_in & (lab == "location")]))
        groups.append(("inputs:spread", col[is_in & (lab == "spread")]))
    is_out = np.array([names[c].startswith("output:") for c in chan]) & ~is_cat
    # locations only: confidence, margin and entropy are near-deterministic functions of one
    # probability vector, so their six location and spread scores are nearly collinear (smallest
    # reference eigenvalue ~0.004), and the whitening amplifies any benign discrepancy between
    # the skewed, tail-corrected spread scores ~15-fold; output spreads keep their single tests
    is_prob = np.array([names[c].startswith("output:P(") for c in chan])
    out_cols = col[is_out & ~is_prob & (lab == "location")]
    if len(out_cols) >= 2:
        groups.append(("outputs:summaries", out_cols))
    # the class probabilities' locations: their mean moves with the class prior (black-box
    # shift detection on the soft outputs); a full probability vector sums to one, so the
    # whitening drops the zero eigenvalue
    prob_cols = col[is_prob & (lab == "location")]
    if len(prob_cols) >= 2:
        groups.append(("outputs:probabilities", prob_cols))
    for c in sorted(set(int(k) for k in chan[is_cat])):
        groups.append((f"{names[c]}:mix", col[(chan == c) & is_cat]))
    g_names, g_cols, g_maps, g_dof = [], [], [], []
    for gname, cols in groups:
        Sg = S[:, cols]
        sd = Sg.std(0)
        cols = cols[sd > 1e-9]
        if len(cols) < 2:
            continue
        Sg = S[:, cols]
        R = np.corrcoef(Sg, rowvar=False)
        evals, evecs = np.linalg.eigh(R)
        ok = evals > 1e-3 * float(evals.max())
        g_names.append(gname)
        g_cols.append(cols.astype(np.int64))
        g_maps.append(np.ascontiguousarray((evecs[:, ok] / np.sqrt(evals[ok])).T))
        g_dof.append(float(ok.sum()))
    model.update(
        group_names=g_names,
        group_cols=g_cols,
        group_maps=g_maps,
        group_dof=np.array(g_dof, dtype=np.float64),
        group_gc=np.ones(len(g_names)),
    )


def refit_moments(
    m: dict[str, Any], g: ReferenceGrowth, s: DriftSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Refit the model's reference moments in place from the grown bin counts (bins, projections,
    whitening and threshold stay): means, variances, tails, per-column between-time variance,
    explanation summaries, reference period. Returns the grown time blocks' statistics when there
    are enough of them (for the joint tests' time-block factors), else ``None``."""
    added, _ = g.take()
    counts = m["ref_counts"] + added
    n = g.events
    sw = float(counts[0].sum())
    tab, chan, kind = m["tab"], m["chan"], m["kind"]
    P = counts[chan] / sw
    mu = (P * tab).sum(1)
    ind = kind == INDICATOR
    mu = np.where(ind, np.clip(mu, 0.5 / n, 1 - 0.5 / n), mu)
    var = (P * (tab - mu[:, None]) ** 2).sum(1)
    var = np.where(ind, mu * (1 - mu), np.maximum(var, 0.25 / n))
    tau2 = m["rho"] * var
    sig_w = np.maximum(var - tau2, 0.0)
    taut = m["taut"]
    timed = len(g.time_kept) >= 8 and min(g.time_kept) >= 2
    blocks = None
    if timed:
        blocks = (np.array(g.time_sums), np.array(g.time_kept), np.array(g.time_a))
        taut = np.maximum(m["taut"], temporal_estimate(*blocks, tau2, sig_w))
    vref = (tau2 * g.caller_square_sum() + sig_w * sw) / sw**2 + taut
    q, nb = s.n_bins, s.n_bins_total
    n_num = m["n_num"]
    p_obs = np.maximum(counts[:n_num, : nb - 1].sum(1, keepdims=True), 1e-12)
    m.update(ref_counts=counts, mu=mu, tau2=tau2, sigw=sig_w, taut=taut, vref=vref,
             ref_p=counts[:n_num, :q] / p_obs)
    # the tail tables (the bulk of a refit's cost: ~0.08 s for 180 columns) follow when the
    # reference has grown fourfold since they were fitted, and at the cap; in between the
    # tables of the smaller reference stay (a column's score never exceeds Wald's either way)
    if n >= 4 * int(m.get("tilt_n", 0)) or not g.active:
        fit_tilt(counts, m)
        m["tilt_n"] = int(n)
    if timed:
        m["temporal"] = {
            "block_events": int(s.temporal_block), "blocks": len(g.time_kept), "columns": int((taut > 0).sum())
        }
    med, spread, _ = summaries(m, counts, s.n_bins)
    m["ref_loc"], m["ref_spread"] = med, spread
    for i in range(len(m["prob_classes"])):
        m["prob_refmean"][i] = prob_mean(m, counts[m["prob_chan0"] + i], i, s.n_bins)
    period: dict[str, Any] = dict(m["ref_period"])
    grown_from = int(period.get("grown_from", period["n"]))
    period.update(end=g.last_ts, n=int(n), grown_from=grown_from)
    period["source"] = f"first {int(n)} events (grown from {grown_from} with blocks no alarm window contained)"
    m["ref_period"] = period
    return blocks


def refit_caller_shares(m: dict[str, Any], bins: np.ndarray, codes: np.ndarray, s: DriftSettings) -> None:
    """Re-estimate, from the grown reference's events, what the moment refits keep from the first
    reference: every score column's between-caller share (ANOVA over the kept events' callers) and
    the covariance test's moments. The variance model then reflects the callers the reference met
    while it grew (a 2,000-event reference may hold no batch burst at all). Shares only ever grow:
    growth absorbs only blocks that raised nothing, so the grown events under-represent loud
    periods and their estimates lean low (the between-time variance is kept the same way)."""
    kept = keep_mask(codes, s.block_size, s.block_cap, anon_cap=anonymous_caps(m, s.cov_caller_blocks, s.cov_step)[0])
    vcodes = variance_codes(codes, s.anonymous_run)
    tab, chan, kind = m["tab"], m["chan"], m["kind"]
    S = tab[np.arange(len(chan))[None, :], bins[:, chan]][kept]
    var = np.where(kind == INDICATOR, m["mu"] * (1 - m["mu"]), np.maximum(S.var(0), 0.25 / len(codes)))
    tau2 = np.clip(between_caller_variance(S, vcodes[kept], var), s.min_caller_correlation * var, var)
    m["rho"] = np.maximum(m["rho"], tau2 / np.maximum(var, 1e-300))
    if m.get("cov_r", 0):
        rho = float(m["cov_rho"])
        fit_cov_moments(bins, codes, vcodes, m, s, min_rho=rho)


def load_model(state_model: dict[str, Any], s: DriftSettings) -> dict[str, Any]:
    """A fitted model from its snapshot (plain lists and arrays back to typed, shaped arrays)."""
    mdl = dict(state_model)
    for key in ("ref_p", "edges", "lo_hi", "ref_loc", "ref_spread", "tab", "mu", "tau2", "sigw", "vref",
                "taut", "tilt_lo", "tilt_inv", "tilt_grid", "prob_refmean", "rho"):
        mdl[key] = np.asarray(mdl[key], dtype=np.float64)
    for key in ("chan", "kind", "tilt_cols"):
        mdl[key] = np.asarray(mdl[key], dtype=np.int64)
    for key in ("tested",):
        mdl[key] = np.asarray(mdl[key], dtype=bool)
    for key in ("group_dof", "group_gc", "group_gc_sim", "group_gc_time"):
        mdl[key] = np.asarray(mdl[key], dtype=np.float64)
    mdl["group_names"] = list(mdl["group_names"])
    mdl["group_cols"] = [np.asarray(c, dtype=np.int64) for c in mdl["group_cols"]]
    mdl["group_maps"] = [np.asarray(c, dtype=np.float64) for c in mdl["group_maps"]]
    if "cov_c2" in mdl:
        mdl["cov_c2"] = float(mdl["cov_c2"])
    for key in ("cov_gtab", "cov_w", "cov_a", "cov_ref", "cov_mu", "cov_isd"):
        if key in mdl:
            mdl[key] = np.asarray(mdl[key], dtype=np.float64)
    if "cov_iu" in mdl:
        mdl["cov_iu"] = np.asarray(mdl["cov_iu"], dtype=np.int64).reshape(2, -1)
    mdl["cov_r"] = int(mdl.get("cov_r", 0))
    mdl["anon_cap"] = int(mdl["anon_cap"])
    for key in ("pca_med", "pca_scale", "pca_isd", "pca_basis"):
        if key in mdl:
            mdl[key] = np.asarray(mdl[key], dtype=np.float64)
    mdl["tilt_grid"] = mdl["tilt_grid"].reshape(len(mdl["tilt_cols"]), TILT_GRID)
    mdl["prob_cols"] = [int(c) for c in mdl["prob_cols"]]
    mdl["prob_classes"] = [str(c) for c in mdl["prob_classes"]]
    mdl["prob_chan0"] = int(mdl["prob_chan0"])
    mdl["prob_binmean"] = np.asarray(mdl["prob_binmean"], dtype=np.float64).reshape(
        len(mdl["prob_classes"]), s.n_bins
    )
    mdl["labels"] = list(mdl["labels"])
    mdl["names"] = list(mdl["names"])
    mdl["ref_counts"] = np.asarray(mdl["ref_counts"], dtype=np.float64).reshape(len(mdl["names"]), s.n_bins_total)
    mdl["ref_period"] = dict(mdl["ref_period"])
    mdl["cat_maps"] = [{str(k): int(v) for k, v in cm.items()} for cm in mdl["cat_maps"]]
    return mdl
