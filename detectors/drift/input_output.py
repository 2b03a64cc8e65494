"""``drift``: calibrated, caller-aware drift detection on inputs, outputs and their joint structure.

Algorithm (one instance per route; details and rationale in ``docs/drift.md``):

1. **Reference.** The first ``reference_size`` events of the route (or the ``reference`` arrays)
   are fitted robustly: every caller's weight is capped at ``caller_cap`` of the reference, bin
   edges are weighted quantiles, and the multivariate projection uses a median/MAD-scaled,
   winsorised covariance. A few outliers or attack queries move a quantile by at most their weight.
2. **Channels.** Numeric channels are the numeric features, the output summaries (confidence,
   margin, entropy; when the reference has probabilities), and whitened principal components of
   the features (top ``n_components``, their squared norm and the squared residual). Every value is mapped to
   one of ``n_bins`` reference-quantile bins or a missing bin. Categorical channels (string
   features and the predicted class) map to the reference's frequent categories, ``other`` and
   missing. Each channel yields linear scores: location (centred mid-rank, a Mann-Whitney-type
   score), spread (``|2u - 1|``) and missing rate for numeric channels; one indicator per
   category for categorical ones. Integer bin counts make every window statistic exact and
   independent of how the stream was cut into batches.
3. **Windows.** Every ``block_size`` events of the route a window closes; statistics are computed
   over the last ``L`` events for every ``L`` in ``window_sizes``. Within a window each caller's
   weight is capped at ``caller_cap * L`` events, and the variance follows a random-effects model
   (between-caller variance estimated from the reference, floored at ``min_caller_correlation``);
   windows with fewer than ``min_effective_callers`` effective callers are not tested. The
   reference's own estimation error is added to the variance.
4. **Calibration.** The window statistic is the max over all scores and window sizes of the
   standardised score (signed-root likelihood ratio for indicator scores). Its threshold is set so
   that alarm *episodes* occur once per ``context.events_between_false_alarms`` events on a null
   stream simulated by resampling the reference **by caller run** (seeded by ``context.seed``):
   empirically when the budget is small, by an effective-number-of-tests extrapolation capped at
   Bonferroni otherwise.
5. **Episodes.** The first window over the threshold raises a finding at its closing event; no
   further finding while the statistic stays high; after ``quiet_windows`` consecutive windows
   below the threshold an update finding (same trigger, ``is_update=True``) closes the episode.
   The reference is kept (no re-referencing), so a persistent drift stays one open episode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from detectors.base import (
    EMPTY_OUTPUT,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    Kind,
    Severity,
    WindowStat,
    register,
)
from detectors.drift._stats import (
    calibrate_threshold,
    signed_root_binomial,
    weighted_quantiles,
)
from pipeline.events import EventBatch

_OUTPUTS = ("confidence", "margin", "entropy")
_LINEAR, _INDICATOR = 0, 1


def _caller_codes(
    client_ids: Sequence[str | None], cmap: dict[str, int], start: int, next_code: int
) -> tuple[np.ndarray, int]:
    """Integer caller codes: >= 0 for named callers, a unique negative code for anonymous events.

    Codes only need to be equal for equal callers within one window, so ``cmap`` may be pruned.
    """
    codes = np.empty(len(client_ids), dtype=np.int64)
    for i, c in enumerate(client_ids):
        if c is None:
            codes[i] = -(start + i + 1)
        else:
            code = cmap.get(c)
            if code is None:
                code = next_code
                next_code += 1
                cmap[c] = code
            codes[i] = code
    return codes, next_code


def _capped_weights(codes: np.ndarray, cap: float) -> tuple[np.ndarray, float, float, float]:
    """Per-event weights ``min(1, cap / n_g)`` and ``(sum W_g, sum W_g^2, sum W_g^2 / n_g)``."""
    _, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
    wg = np.minimum(counts, cap).astype(np.float64)
    return wg[inv] / counts[inv], float(wg.sum()), float((wg**2).sum()), float((wg**2 / counts).sum())


@register
class DriftDetector(Detector):
    """Input, output and multivariate drift of one route, calibrated to an event budget.

    Parameters
    ----------
    context : DetectorContext
        Route, schema, seed and ``events_between_false_alarms`` (the false-alarm budget).
    reference_size : int, default 2000
        Number of first events of the route that form the reference period.
    reference : mapping, optional
        Reference arrays instead of the first events: ``"X"`` (n, d) is required; ``"C"``,
        ``"prediction"``, ``"confidence"``, ``"margin"``, ``"entropy"``, ``"client_ids"``, ``"ts"``
        are optional. Output channels absent from it are not monitored.
    block_size : int, default 200
        A window closes every ``block_size`` events of the route.
    window_sizes : tuple of int, default (200, 600, 1000)
        Window lengths in events (multiples of ``block_size``); all tested at every close.
    n_bins : int, default 16
        Reference-quantile bins per numeric channel.
    n_components : int, default 8
        Number of top principal components monitored, with their squared norm and the
        squared reconstruction residual (0 disables multivariate channels).
    max_categories : int, default 20
        Most frequent reference categories kept per categorical channel (rest is ``other``).
    min_category_freq : float, default 0.02
        Categories rarer than this in the reference are pooled into ``other``.
    caller_cap : float, default 0.02
        Cap on one caller's weight, as a fraction of the window (and of the reference).
    min_effective_callers : float, default 20.0
        Windows with fewer effective callers ``(sum W)^2 / sum W^2`` are not tested.
    min_caller_correlation : float, default 0.05
        Floor on the between-caller share of each score's variance.
    quiet_windows : int, default 5
        Consecutive closes below the threshold that end an episode.
    calibration_events : int, default 100000
        Length of the simulated null stream used to calibrate the threshold (raised to at least
        30 budgets, capped at 400000, when the budget is small enough to calibrate empirically).
    top_k : int, default 5
        Contributors listed in an explanation.

    Examples
    --------
    >>> from detectors.base import DetectorContext
    >>> from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays
    >>> rng = np.random.default_rng(0)
    >>> ctx = DetectorContext(RouteKey("m", "1"), FeatureSchema(("a", "b", "c")), seed=1)
    >>> det = DriftDetector(ctx, calibration_events=20000)
    >>> X = rng.normal(size=(5000, 3))
    >>> X[3500:, 1] += 1.0  # feature "b" moves at event 3500
    >>> out = det.process(batch_from_arrays(X, schema=ctx.schema))
    >>> f = out.findings[0]
    >>> f.trigger_event_id, f.explanation["top"][0]["stat"]
    ('e3599', 'feature:b')
    """

    name: ClassVar[str] = "drift"
    consumes: ClassVar[str] = "events"
    state_version: ClassVar[int] = 1

    def __init__(
        self,
        context: DetectorContext,
        *,
        reference_size: int = 2000,
        reference: Mapping[str, Any] | None = None,
        block_size: int = 200,
        window_sizes: Sequence[int] = (200, 600, 1000),
        n_bins: int = 16,
        n_components: int = 8,
        max_categories: int = 20,
        min_category_freq: float = 0.02,
        caller_cap: float = 0.02,
        min_effective_callers: float = 20.0,
        min_caller_correlation: float = 0.05,
        quiet_windows: int = 5,
        calibration_events: int = 100_000,
        top_k: int = 5,
    ) -> None:
        window_sizes = tuple(int(w) for w in window_sizes)
        super().__init__(
            context,
            reference_size=reference_size,
            reference=reference,
            block_size=block_size,
            window_sizes=list(window_sizes),
            n_bins=n_bins,
            n_components=n_components,
            max_categories=max_categories,
            min_category_freq=min_category_freq,
            caller_cap=caller_cap,
            min_effective_callers=min_effective_callers,
            min_caller_correlation=min_caller_correlation,
            quiet_windows=quiet_windows,
            calibration_events=calibration_events,
            top_k=top_k,
        )
        if int(reference_size) < 200:
            raise ValueError(f"reference_size must be >= 200, got {reference_size}")
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not window_sizes or any(w <= 0 or w % block_size for w in window_sizes):
            raise ValueError(
                f"window_sizes must be positive multiples of block_size={block_size}, got {window_sizes}"
            )
        if not 4 <= int(n_bins) <= 128:
            raise ValueError(f"n_bins must be in [4, 128], got {n_bins}")
        if int(n_components) < 0:
            raise ValueError(f"n_components must be >= 0, got {n_components}")
        if not 1 <= int(max_categories) <= 100:
            raise ValueError(f"max_categories must be in [1, 100], got {max_categories}")
        if not 0.0 <= float(min_category_freq) < 0.5:
            raise ValueError(f"min_category_freq must be in [0, 0.5), got {min_category_freq}")
        if not 0.0 < float(caller_cap) <= 1.0:
            raise ValueError(f"caller_cap must be in (0, 1], got {caller_cap}")
        if float(min_effective_callers) < 1.0:
            raise ValueError(f"min_effective_callers must be >= 1, got {min_effective_callers}")
        if not 0.0 <= float(min_caller_correlation) < 1.0:
            raise ValueError(f"min_caller_correlation must be in [0, 1), got {min_caller_correlation}")
        if int(quiet_windows) < 1:
            raise ValueError(f"quiet_windows must be >= 1, got {quiet_windows}")
        if int(calibration_events) < 10 * max(window_sizes):
            raise ValueError(f"calibration_events must be >= 10 * max(window_sizes), got {calibration_events}")
        if int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if context.events_between_false_alarms <= 0:
            raise ValueError("context.events_between_false_alarms must be > 0")
        if reference is not None and "X" not in reference:
            raise ValueError("reference must contain an 'X' array of shape (n, d)")

        self.reference_size = int(reference_size)
        self.block_size = int(block_size)
        self.window_sizes = tuple(sorted(window_sizes))
        self.n_bins = int(n_bins)
        self.n_components = int(n_components)
        self.max_categories = int(max_categories)
        self.min_category_freq = float(min_category_freq)
        self.caller_cap = float(caller_cap)
        self.min_effective_callers = float(min_effective_callers)
        self.min_caller_correlation = float(min_caller_correlation)
        self.quiet_windows = int(quiet_windows)
        self.calibration_events = int(calibration_events)
        self.top_k = int(top_k)
        self.budget = float(context.events_between_false_alarms)
        self.n_bins_total = max(self.n_bins, self.max_categories + 1) + 1
        self.missing_bin = self.n_bins_total - 1
        self._reset()
        if reference is not None:
            self._fit_from_mapping(reference)

    # ------------------------------------------------------------------ state containers
    def _reset(self) -> None:
        self.fitted = False
        self.ref_buf: dict[str, list[Any]] = {k: [] for k in ("X", "C", "pred", "pval", "out", "cid", "ts")}
        self.n_buf = 0
        self.cmap: dict[str, int] = {}
        self.next_code = 0
        self.n_seen = 0  # events of the route seen
        self.n_mon = 0  # events seen after the reference
        self.hist_bins = np.empty((0, 0), dtype=np.uint8)
        self.hist_codes = np.empty(0, dtype=np.int64)
        self.hist_ts = np.empty(0, dtype=np.float64)
        self.blocks = np.empty((0, 0, self.n_bins_total), dtype=np.int64)
        self.episode: dict[str, Any] | None = None
        self.model: dict[str, Any] = {}

    # ------------------------------------------------------------------ reference fitting
    def _fit_from_mapping(self, ref: Mapping[str, Any]) -> None:
        X = np.asarray(ref["X"], dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 200:
            raise ValueError("reference['X'] must be 2-D with at least 200 rows")
        n = X.shape[0]
        C = np.asarray(ref.get("C", np.empty((n, 0), dtype=object)), dtype=object)
        pred = [str(p) for p in ref["prediction"]] if "prediction" in ref else None
        outs = np.column_stack(
            [np.asarray(ref.get(k, np.full(n, np.nan)), dtype=np.float64) for k in _OUTPUTS]
        )
        cids = list(ref.get("client_ids", [None] * n))
        ts = np.asarray(ref.get("ts", np.arange(n, dtype=np.float64)), dtype=np.float64)
        codes, _ = _caller_codes(cids, {}, 0, 0)
        pval = (
            np.array([_to_float(p) for p in pred], dtype=np.float64) if pred is not None else np.full(n, np.nan)
        )
        self._fit(X, C, pred, pval, outs, codes, ts, source="reference param")

    def _fit(
        self,
        X: np.ndarray,
        C: np.ndarray,
        pred: list[str] | None,
        pval: np.ndarray,
        outs: np.ndarray,
        codes: np.ndarray,
        ts: np.ndarray,
        source: str,
    ) -> None:
        n, d = X.shape
        cap = max(1.0, self.caller_cap * n)
        w, sw, a_ref, b_ref = _capped_weights(codes, cap)
        model: dict[str, Any] = {"d": d, "k": C.shape[1], "source": source}
        model["ref_period"] = {"start": float(ts.min()), "end": float(ts.max()), "n": int(n), "source": source}

        # multivariate projection: robust scaling, winsorising, weighted covariance, eigenvectors
        ncomp = 0
        if d >= 2 and self.n_components > 0:
            med = np.nanmedian(X, axis=0)
            mad = np.nanmedian(np.abs(X - med), axis=0) * 1.4826
            sd = np.nanstd(X, axis=0)
            scale = np.where(mad > 1e-12, mad, np.where(sd > 1e-12, sd, 1.0))
            Z = self._robust_scale(X, med, scale)
            cov = (Z * w[:, None]).T @ Z / w.sum()
            evals, evecs = np.linalg.eigh(cov)
            evals = np.maximum(evals, 1e-9 * max(float(evals.max()), 1e-12))
            k = min(self.n_components, d - 1)
            idx = np.arange(d - 1, d - 1 - k, -1)
            proj = evecs[:, idx] / np.sqrt(evals[idx])
            model.update(pca_med=med, pca_scale=scale, pca_proj=proj, pca_basis=evecs[:, idx].copy())
            ncomp = k
        model["ncomp"] = ncomp

        has_out = [bool(np.isfinite(outs[:, j]).mean() > 0.5) for j in range(3)]
        model["has_out"] = has_out
        # prediction: categorical, or numeric for regression-like outputs
        pred_numeric = False
        if pred is not None:
            finite = np.isfinite(pval)
            if finite.mean() > 0.99 and len(set(pred)) > self.max_categories:
                pred_numeric = True
        model["pred_kind"] = "none" if pred is None else ("numeric" if pred_numeric else "categorical")

        names: list[str] = [f"feature:{nm}" for nm in self._numeric_names(d)]
        names += [f"output:{o}" for o, h in zip(_OUTPUTS, has_out, strict=True) if h]
        if pred_numeric:
            names.append("output:prediction")
        names += [f"multivariate:pc{j}" for j in range(ncomp)]
        if ncomp:
            names += ["multivariate:norm", "multivariate:residual"]
        n_num = len(names)
        model["n_num"] = n_num
        Zn = self._numeric_matrix(X, outs, pval, model)

        # numeric bins from weighted reference quantiles
        q = self.n_bins
        levels = np.arange(1, q) / q
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

        # categorical channels: string features, then the predicted class
        cat_maps: list[dict[str, int]] = []
        cat_labels: list[list[str]] = []
        cat_cols: list[list[Any]] = [list(C[:, j]) for j in range(C.shape[1])]
        cat_names = [f"categorical:{nm}" for nm in self._categorical_names(C.shape[1])]
        if pred is not None and not pred_numeric:
            cat_cols.append(list(pred))
            cat_names.append("output:prediction")
        for col in cat_cols:
            freq: dict[str, float] = {}
            for v, wi in zip(col, w, strict=True):
                if v is not None:
                    key = str(v)
                    freq[key] = freq.get(key, 0.0) + float(wi)
            total = float(w.sum())
            keep = sorted(
                (c for c in freq if freq[c] / total >= self.min_category_freq), key=lambda c: (-freq[c], c)
            )[: self.max_categories]
            cat_maps.append({c: i for i, c in enumerate(keep)})
            cat_labels.append(keep)
        model.update(cat_maps=cat_maps, cat_labels=cat_labels)
        names += cat_names
        model["names"] = names

        bins = self._bins(Zn, C, pred, model)

        # score columns: (channel, table over bins, kind, label)
        nb = self.n_bins_total
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
            spr = np.append(np.abs(2 * u - 1), 0.0)
            for tab, lab in ((loc, "location"), (spr, "spread")):
                mu_obs = float((tab[: nb - 1] * cnt[: nb - 1]).sum() / max(p_obs, 1e-12))
                tab = tab.copy()
                tab[nb - 1] = mu_obs  # a missing value is neutral for location and spread
                tables.append(tab)
                chans.append(c)
                kinds.append(_LINEAR)
                labels.append(lab)
            if c < d or names[c].startswith("output:"):
                miss = np.zeros(nb)
                miss[nb - 1] = 1.0
                tables.append(miss)
                chans.append(c)
                kinds.append(_INDICATOR)
                labels.append("missing")
        for j, keep in enumerate(cat_labels):
            c = n_num + j
            for i, lab in enumerate([*keep, "<other>", "<missing>"]):
                ind = np.zeros(nb)
                ind[i if i < len(keep) + 1 else nb - 1] = 1.0
                tables.append(ind)
                chans.append(c)
                kinds.append(_INDICATOR)
                labels.append(f"category={lab}")
        tab = np.array(tables)
        chan = np.array(chans, dtype=np.int64)
        kind = np.array(kinds, dtype=np.int64)

        # reference moments with per-caller caps; between-caller variance by ANOVA moments
        S = tab[np.arange(len(chan))[None, :], bins[:, chan]]
        mu = (w[:, None] * S).sum(0) / w.sum()
        floor_p = 0.5 / n
        ind = kind == _INDICATOR
        mu = np.where(ind, np.clip(mu, floor_p, 1 - floor_p), mu)
        var = (w[:, None] * (S - mu) ** 2).sum(0) / w.sum()
        var = np.where(ind, mu * (1 - mu), np.maximum(var, 0.25 / n))
        tau2 = self._between_caller_variance(S, codes, var)
        tau2 = np.clip(tau2, self.min_caller_correlation * var, var)
        sig_w = np.maximum(var - tau2, 0.0)
        vref = (tau2 * a_ref + sig_w * b_ref) / sw**2
        model.update(ref_p=ref_p, tab=tab, chan=chan, kind=kind, labels=labels, mu=mu, tau2=tau2, sigw=sig_w, vref=vref)
        self.model = model

        # calibration on a caller-resampled null stream
        self.threshold, self.calibration = self._calibrate(bins, codes)
        self.fitted = True
        self.hist_bins = np.empty((0, len(names)), dtype=np.uint8)
        self.blocks = np.zeros((0, len(names), nb), dtype=np.int64)

    @staticmethod
    def _between_caller_variance(S: np.ndarray, codes: np.ndarray, var: np.ndarray) -> np.ndarray:
        _, inv, ng = np.unique(codes, return_inverse=True, return_counts=True)
        n, g = len(codes), len(ng)
        if g >= n or g < 2:
            return np.zeros(S.shape[1])
        sums = np.zeros((g, S.shape[1]))
        np.add.at(sums, inv, S)
        means = sums / ng[:, None]
        grand = S.mean(0)
        ssw = ((S - means[inv]) ** 2).sum(0)
        sw2 = ssw / (n - g)
        ssb = (ng[:, None] * (means - grand) ** 2).sum(0)
        denom = n - float((ng**2).sum()) / n
        if denom <= 0:
            return var.copy()
        return np.asarray((ssb - (g - 1) * sw2) / denom)

    def _numeric_names(self, d: int) -> list[str]:
        names = list(self.context.schema.numeric)
        return names if len(names) == d else [f"f{i}" for i in range(d)]

    def _categorical_names(self, k: int) -> list[str]:
        names = list(self.context.schema.categorical)
        return names if len(names) == k else [f"c{i}" for i in range(k)]

    @staticmethod
    def _robust_scale(X: np.ndarray, med: np.ndarray, scale: np.ndarray) -> np.ndarray:
        Z = (X - med) / scale
        Z = np.clip(Z, -5.0, 5.0)
        return np.where(np.isnan(Z), 0.0, Z)

    def _numeric_matrix(self, X: np.ndarray, outs: np.ndarray, pval: np.ndarray, model: dict[str, Any]) -> np.ndarray:
        parts = [X]
        has_out = model["has_out"]
        if any(has_out):
            parts.append(outs[:, [j for j in range(3) if has_out[j]]])
        if model["pred_kind"] == "numeric":
            parts.append(pval[:, None])
        if model["ncomp"]:
            Z = self._robust_scale(X, model["pca_med"], model["pca_scale"])
            # einsum's own loops keep every row's rounding independent of the batch size (BLAS
            # blocking does not), so bins and findings do not depend on where batches were cut
            Y = np.einsum("ij,jk->ik", Z, model["pca_proj"])
            B = np.einsum("ij,jk->ik", Z, model["pca_basis"])
            parts.append(Y)
            parts.append((Y**2).sum(1, keepdims=True))
            parts.append(((Z**2).sum(1) - (B**2).sum(1))[:, None])
        return np.hstack(parts) if len(parts) > 1 else X

    def _bins(self, Zn: np.ndarray, C: np.ndarray, pred: list[str] | None, model: dict[str, Any]) -> np.ndarray:
        n = Zn.shape[0]
        names = model["names"]
        out = np.empty((n, len(names)), dtype=np.uint8)
        edges = model["edges"]
        nn = Zn.shape[1]
        # bin = number of edges <= value (``searchsorted(..., side="right")``), vectorised over
        # channels; padded edges are +inf and NaN compares false, then goes to the missing bin
        b = np.zeros((n, nn), dtype=np.uint8)
        for k in range(edges.shape[1]):
            b += Zn >= edges[:, k]
        b[np.isnan(Zn)] = self.missing_bin
        out[:, :nn] = b
        n_num = model["n_num"]
        cols: list[list[Any]] = [list(C[:, j]) for j in range(C.shape[1])]
        if model["pred_kind"] == "categorical":
            cols.append(pred if pred is not None else [None] * n)
        for j, (col, cmap) in enumerate(zip(cols, model["cat_maps"], strict=True)):
            other = len(cmap)
            mb = self.missing_bin
            out[:, n_num + j] = [mb if v is None else cmap.get(str(v), other) for v in col]
        return out

    # ------------------------------------------------------------------ window statistics
    def _window_z(self, counts: np.ndarray, sw: float, a: float, b: float, live: bool) -> np.ndarray:
        """Standardised scores of all columns for one window (``counts``: channels x bins, weighted)."""
        m = self.model
        colsum = (counts[m["chan"]] * m["tab"]).sum(1)
        mean = colsum / sw
        v = (m["tau2"] * a + m["sigw"] * b) / sw**2
        if live:
            v = v + m["vref"]
        z = (mean - m["mu"]) / np.sqrt(v)
        ind = m["kind"] == _INDICATOR
        if ind.any():
            p = m["mu"][ind]
            neff = p * (1 - p) / v[ind]
            z[ind] = signed_root_binomial(mean[ind], p, neff)
        return z

    def _scan(
        self,
        bins: np.ndarray,
        codes: np.ndarray,
        n_before: int,
        n_new: int,
        blocks_before: np.ndarray,
        live: bool,
    ) -> tuple[Iterator[tuple[int, int, list[np.ndarray | None], list[dict[str, Any]]]], np.ndarray]:
        """Evaluate every window that closes among the last ``n_new`` rows of ``bins``.

        ``bins``/``codes`` hold history followed by new events; ``n_before`` is the number of
        monitored events before ``bins[0]``. Returns a lazy iterator over closes yielding
        ``(end index in bins, monitored events so far, z per window size or None, window info)``
        and the block counts to keep (last ``max(window_sizes) / block_size`` blocks).
        """
        step = self.block_size
        nb = self.n_bins_total
        nch = bins.shape[1]
        first = (-n_before) % step
        ends = np.arange(first if first > 0 else step, len(bins) + 1, step)
        ends = ends[ends > len(bins) - n_new]
        max_blocks = max(self.window_sizes) // step
        if len(ends):
            seg = bins[ends[0] - step : ends[-1]]
            nblk = len(ends)
            flat = (
                np.arange(nblk, dtype=np.int64).repeat(step)[:, None] * (nch * nb)
                + np.arange(nch, dtype=np.int64)[None, :] * nb
                + seg.astype(np.int64)
            )
            new_blocks = np.bincount(flat.ravel(), minlength=nblk * nch * nb).reshape(nblk, nch, nb)
            allb = np.concatenate([blocks_before, new_blocks])
        else:
            allb = blocks_before
        nb0 = len(blocks_before)
        keep = allb[-max_blocks:] if len(allb) else allb

        def gen() -> Iterator[tuple[int, int, list[np.ndarray | None], list[dict[str, Any]]]]:
            cum = np.concatenate([np.zeros((1, nch, nb), dtype=np.int64), np.cumsum(allb, axis=0)])
            chan_off = np.arange(nch, dtype=np.int64)[None, :] * nb
            big = max(self.window_sizes)
            # bin counts of one heavy caller within one block, computed once per (block, caller)
            cache: dict[tuple[int, int], np.ndarray] = {}

            def caller_block_counts(blk_start: int, code: int) -> np.ndarray:
                key = ((n_before + blk_start) // step, code)
                got = cache.get(key)
                if got is None:
                    rows = bins[blk_start : blk_start + step][codes[blk_start : blk_start + step] == code]
                    got = np.bincount(
                        (rows.astype(np.int64) + chan_off).ravel(), minlength=nch * nb
                    ).reshape(nch, nb)
                    cache[key] = got
                return got

            for j, e in enumerate(ends):
                e = int(e)
                n_here = n_before + e
                zs: list[np.ndarray | None] = []
                infos: list[dict[str, Any]] = []
                lwin = min(big, n_here, e)
                uniq, inv = np.unique(codes[e - lwin : e], return_inverse=True)
                if j % 16 == 0 and cache:
                    oldest = (n_here - big) // step
                    cache = {k: v for k, v in cache.items() if k[0] >= oldest}
                for L in self.window_sizes:
                    if n_here < L:
                        zs.append(None)
                        infos.append({})
                        continue
                    kb = L // step
                    cj = nb0 + j + 1
                    counts = (cum[cj] - cum[cj - kb]).astype(np.float64)
                    ng = np.bincount(inv[lwin - L :], minlength=len(uniq))
                    present = ng > 0
                    ngp = ng[present]
                    cap = max(1.0, self.caller_cap * L)
                    wg = np.minimum(ngp, cap).astype(np.float64)
                    sw = float(wg.sum())
                    a = float((wg**2).sum())
                    bsum = float((wg**2 / ngp).sum())
                    eff_callers = sw * sw / a
                    if eff_callers < self.min_effective_callers:
                        zs.append(None)
                        infos.append({"effective_callers": eff_callers})
                        continue
                    heavy = np.flatnonzero(ngp > cap)
                    if len(heavy):
                        codes_p = uniq[present]
                        for h_i in heavy:
                            cg = np.zeros((nch, nb), dtype=np.int64)
                            for bs in range(e - L, e, step):
                                cg += caller_block_counts(bs, int(codes_p[h_i]))
                            counts -= (1.0 - wg[h_i] / ngp[h_i]) * cg
                    zs.append(self._window_z(counts, sw, a, bsum, live))
                    infos.append({"effective_callers": eff_callers, "counts": counts})
                yield e, n_here, zs, infos

        return gen(), keep

    def _calibrate(self, bins: np.ndarray, codes: np.ndarray) -> tuple[float, dict[str, Any]]:
        rng = np.random.default_rng(self.context.seed)
        n = len(codes)
        n_sim = self.calibration_events
        if n_sim < 30 * self.budget <= 400_000:
            n_sim = int(30 * self.budget)
        # runs of consecutive events of one caller (an anonymous event is a run of its own)
        brk = np.flatnonzero((codes[1:] != codes[:-1]) | (codes[1:] < 0)) + 1
        starts = np.concatenate([[0], brk])
        ends = np.concatenate([brk, [n]])
        lens = ends - starts
        n_draw = int(n_sim / lens.mean() * 1.2) + 10
        pick = rng.integers(0, len(starts), size=n_draw)
        tot = np.cumsum(lens[pick])
        pick = pick[: int(np.searchsorted(tot, n_sim)) + 1]
        idx = np.concatenate([np.arange(starts[p], ends[p]) for p in pick])[:n_sim]
        sim_codes = codes[idx].copy()
        anon = sim_codes < 0
        sim_codes[anon] = -(np.flatnonzero(anon) + 1)
        sim_bins = bins[idx]
        res, _ = self._scan(
            sim_bins, sim_codes, 0, len(sim_bins), np.zeros((0, bins.shape[1], self.n_bins_total), np.int64), False
        )
        m = np.array(
            [max((float(np.abs(z).max()) for z in zs if z is not None), default=0.0) for _, _, zs, _ in res]
        )
        ncols = len(self.model["chan"])
        tests_per_event = ncols * len(self.window_sizes) / self.block_size
        h, info = calibrate_threshold(m, len(sim_bins), self.budget, self.quiet_windows, tests_per_event)
        info["seed"] = int(self.context.seed)
        return h, info

    # ------------------------------------------------------------------ processing
    def process(self, batch: EventBatch) -> DetectorOutput:
        n = len(batch)
        if n == 0:
            return EMPTY_OUTPUT
        outs = np.column_stack([batch.confidence, batch.margin, batch.entropy])
        codes, self.next_code = _caller_codes(batch.client_ids, self.cmap, self.n_seen, self.next_code)
        start = 0
        if not self.fitted:
            take = min(n, self.reference_size - self.n_buf)
            sl = slice(0, take)
            self.ref_buf["X"].append(batch.X[sl])
            self.ref_buf["C"].append(batch.C[sl])
            self.ref_buf["pred"].extend(batch.prediction[:take])
            self.ref_buf["pval"].append(batch.prediction_value[sl])
            self.ref_buf["out"].append(outs[sl])
            self.ref_buf["cid"].append(codes[sl])
            self.ref_buf["ts"].append(batch.ts[sl])
            self.n_buf += take
            self.n_seen += take
            start = take
            if self.n_buf >= self.reference_size:
                rb = self.ref_buf
                self._fit(
                    np.concatenate(rb["X"]),
                    np.concatenate(rb["C"]) if rb["C"] else np.empty((0, 0), object),
                    list(rb["pred"]),
                    np.concatenate(rb["pval"]),
                    np.concatenate(rb["out"]),
                    np.concatenate(rb["cid"]),
                    np.concatenate(rb["ts"]),
                    source=f"first {self.reference_size} events",
                )
                self.ref_buf = {k: [] for k in self.ref_buf}
            if start >= n:
                return EMPTY_OUTPUT
        sl = slice(start, n)
        m = self.model
        Zn = self._numeric_matrix(batch.X[sl], outs[sl], batch.prediction_value[sl], m)
        bins_new = self._bins(Zn, batch.C[sl], batch.prediction[start:], m)
        return self._monitor(bins_new, codes[sl], batch.ts[sl], batch.event_ids[start:])

    def _monitor(self, bins_new: np.ndarray, codes_new: np.ndarray, ts_new: np.ndarray, ids: list[str]) -> DetectorOutput:
        nh = len(self.hist_codes)
        bins = np.concatenate([self.hist_bins, bins_new])
        codes = np.concatenate([self.hist_codes, codes_new])
        ts = np.concatenate([self.hist_ts, ts_new])
        n_new = len(codes_new)
        res, self.blocks = self._scan(bins, codes, self.n_mon - nh, n_new, self.blocks, True)
        findings: list[Finding] = []
        stats: list[WindowStat] = []
        h = self.threshold
        big = max(self.window_sizes)
        for e, n_mon_here, zs, infos in res:
            best, best_s = 0.0, -1
            for s, z in enumerate(zs):
                if z is not None:
                    v = float(np.abs(z).max())
                    if v > best:
                        best, best_s = v, s
            close_ts = float(ts[e - 1])
            eid = ids[e - 1 - nh]
            exceed = best > h
            ep = self.episode
            if ep is None and exceed:
                L = self.window_sizes[best_s]
                expl = self._explain(zs[best_s], infos[best_s], best, L, n_mon_here)  # type: ignore[arg-type]
                wstart = float(ts[max(e - L, 0)]) if e - L >= 0 else float("nan")
                self.episode = {
                    "trigger": eid,
                    "raised_at": close_ts,
                    "score": best,
                    "window_start": wstart,
                    "last_exceed": close_ts,
                    "quiet": 0,
                    "explanation": expl,
                }
                findings.append(self._finding(self.episode, None, None, False))
            elif ep is not None:
                if exceed:
                    ep["quiet"] = 0
                    ep["last_exceed"] = close_ts
                else:
                    ep["quiet"] += 1
                    if ep["quiet"] >= self.quiet_windows:
                        findings.append(self._finding(ep, ep["last_exceed"], close_ts, True))
                        self.episode = None
            if n_mon_here % big == 0 and zs[-1] is not None:
                stats.extend(self._window_stats(zs[-1], infos[-1], n_mon_here // big - 1, float(ts[e - big]), close_ts, best))
        # keep the last max(window) events as history
        keep = min(len(codes), big)
        self.hist_bins = bins[len(bins) - keep :].copy()
        self.hist_codes = codes[len(codes) - keep :].copy()
        self.hist_ts = ts[len(ts) - keep :].copy()
        self.n_mon += n_new
        self.n_seen += n_new
        if len(self.cmap) > 200_000:
            self._prune_callers()
        return DetectorOutput(findings=tuple(findings), stats=tuple(stats))

    def _prune_callers(self) -> None:
        live = set(int(c) for c in self.hist_codes if c >= 0)
        self.cmap = {k: v for k, v in self.cmap.items() if v in live}

    def _finding(self, ep: dict[str, Any], window_end: float | None, updated_at: float | None, upd: bool) -> Finding:
        expl = dict(ep["explanation"])
        if upd:
            expl["episode"] = {"ended_at": updated_at, "last_exceedance": window_end, "quiet_windows": self.quiet_windows}
        return Finding(
            kind=Kind.DRIFT,
            detector=self.name,
            config_hash=self.config_hash,
            trigger_event_id=ep["trigger"],
            raised_at=ep["raised_at"],
            score=float(ep["score"]),
            threshold=float(self.threshold),
            severity=Severity.CRITICAL if ep["score"] > 2 * self.threshold else Severity.WARNING,
            explanation=expl,
            client_id=None,
            window_start=ep["window_start"],
            window_end=window_end if upd else ep["raised_at"],
            updated_at=updated_at,
            is_update=upd,
        )

    # ------------------------------------------------------------------ explanation, stats
    def _summaries(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interpolated current median and spread, and binned KS distance, of numeric channels."""
        m = self.model
        n_num = m["n_num"]
        cnt = counts[:n_num, : self.n_bins]
        tot = np.maximum(cnt.sum(1, keepdims=True), 1e-12)
        cw = np.cumsum(cnt, 1) / tot
        edges = m["edges"]
        lo = np.concatenate([m["lo_hi"][:, :1], edges], axis=1)
        hi = np.concatenate([edges, m["lo_hi"][:, 1:]], axis=1)
        hi = np.where(np.isfinite(hi), hi, m["lo_hi"][:, 1:])
        lo = np.where(np.isfinite(lo), lo, hi)

        def quant(qv: float) -> np.ndarray:
            b = np.argmax(cw >= qv - 1e-12, axis=1)
            r = np.arange(n_num)
            prev = np.where(b > 0, cw[r, np.maximum(b - 1, 0)], 0.0)
            width = np.maximum(cw[r, b] - prev, 1e-12)
            f = np.clip((qv - prev) / width, 0.0, 1.0)
            return np.asarray(lo[r, b] + f * (hi[r, b] - lo[r, b]))

        med = quant(0.5)
        spread = (quant(0.75) - quant(0.25)) / 1.349
        ks = np.abs(cw - np.cumsum(m["ref_p"], 1)).max(1)
        return med, spread, ks

    def _explain(self, z: np.ndarray, info: dict[str, Any], stat: float, L: int, n_mon_here: int) -> dict[str, Any]:
        m = self.model
        names = m["names"]
        labels = m["labels"]
        az = np.abs(z)
        per_chan = np.zeros(len(names))
        np.maximum.at(per_chan, m["chan"], az)
        order = np.argsort(-per_chan, kind="stable")[: self.top_k]
        counts = info["counts"]
        med, spread, ks = self._summaries(counts)
        top: list[dict[str, Any]] = []
        n_num = m["n_num"]
        for c in order:
            c = int(c)
            cols = np.flatnonzero(m["chan"] == c)
            col = int(cols[np.argmax(az[cols])])
            entry: dict[str, Any] = {
                "stat": names[c],
                "score": round(float(per_chan[c]), 4),
                "test": labels[col],
                "z": round(float(z[col]), 4),
            }
            if names[c].startswith("multivariate:pc"):
                load = m["pca_basis"][:, int(names[c][15:])]
                feats = self._numeric_names(m["d"])
                entry["loadings"] = {feats[i]: _r(load[i]) for i in np.argsort(-np.abs(load))[:3]}
            if c < n_num:
                entry["reference"] = {"median": _r(m["ref_loc"][c]), "spread": _r(m["ref_spread"][c])}
                entry["current"] = {"median": _r(med[c]), "spread": _r(spread[c])}
                entry["ks_distance"] = _r(ks[c])
                mcol = [k for k in cols if labels[k] == "missing"]
                if mcol:
                    k = int(mcol[0])
                    entry["reference"]["missing_rate"] = _r(m["mu"][k])
                    entry["current"]["missing_rate"] = _r(counts[c, self.missing_bin] / max(counts[c].sum(), 1e-12))
            else:
                cat_cols = [int(k) for k in cols]
                tot = max(counts[c].sum(), 1e-12)
                ref_f = {labels[k][9:]: _r(m["mu"][k]) for k in cat_cols}
                cur_f = {}
                for k in cat_cols:
                    tabk = m["tab"][k]
                    cur_f[labels[k][9:]] = _r(float((counts[c] * tabk).sum() / tot))
                entry["reference"] = {"frequencies": ref_f}
                entry["current"] = {"frequencies": cur_f}
                entry["total_variation"] = _r(0.5 * sum(abs(cur_f[k] - ref_f[k]) for k in ref_f))
            top.append(entry)
        return {
            "statistic": round(stat, 4),
            "threshold": round(float(self.threshold), 4),
            "statistic_definition": "max over scores and window sizes of |standardised score|",
            "window_events": int(L),
            "window_sizes": list(self.window_sizes),
            "block_size": self.block_size,
            "effective_callers": round(float(info.get("effective_callers", 0.0)), 2),
            "events_since_reference": int(n_mon_here),
            "top": top,
            "reference_period": dict(m["ref_period"]),
            "config_hash": self.config_hash,
            "events_between_false_alarms": self.budget,
            "calibration": dict(self.calibration),
        }

    def _window_stats(
        self, z: np.ndarray, info: dict[str, Any], window: int, start: float, end: float, best: float
    ) -> list[WindowStat]:
        m = self.model
        names = m["names"]
        per_chan = np.zeros(len(names))
        np.maximum.at(per_chan, m["chan"], np.abs(z))
        med, spread, _ = self._summaries(info["counts"])
        n_num = m["n_num"]
        L = max(self.window_sizes)
        h = float(self.threshold)
        out = [
            WindowStat(
                self.name,
                names[c],
                window,
                start,
                end,
                L,
                float(med[c]) if c < n_num else None,
                float(spread[c]) if c < n_num else None,
                float(per_chan[c]),
                h,
            )
            for c in range(len(names))
        ]
        out.append(WindowStat(self.name, "drift", window, start, end, L, None, None, float(best), h))
        return out

    # ------------------------------------------------------------------ state
    def _get_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "fitted": self.fitted,
            "n_seen": self.n_seen,
            "n_mon": self.n_mon,
            "n_buf": self.n_buf,
            "cmap": dict(self.cmap),
            "next_code": self.next_code,
        }
        if not self.fitted:
            rb = self.ref_buf
            st["ref"] = {
                "X": np.concatenate(rb["X"]) if rb["X"] else np.empty((0, 0)),
                "C": np.concatenate(rb["C"]) if rb["C"] else np.empty((0, 0), object),
                "pred": list(rb["pred"]),
                "pval": np.concatenate(rb["pval"]) if rb["pval"] else np.empty(0),
                "out": np.concatenate(rb["out"]) if rb["out"] else np.empty((0, 3)),
                "cid": np.concatenate(rb["cid"]) if rb["cid"] else np.empty(0, np.int64),
                "ts": np.concatenate(rb["ts"]) if rb["ts"] else np.empty(0),
            }
            st["ref"]["C"] = st["ref"]["C"].tolist()
            return st
        st["model"] = dict(self.model)
        st["threshold"] = float(self.threshold)
        st["calibration"] = dict(self.calibration)
        st["hist_bins"] = self.hist_bins.copy()
        st["hist_codes"] = self.hist_codes.copy()
        st["hist_ts"] = self.hist_ts.copy()
        st["blocks"] = self.blocks.copy()
        st["episode"] = None if self.episode is None else dict(self.episode)
        return st

    def _set_state(self, state: dict[str, Any]) -> None:
        self._reset()
        self.n_seen = int(state["n_seen"])
        self.n_mon = int(state["n_mon"])
        self.n_buf = int(state["n_buf"])
        self.cmap = {str(k): int(v) for k, v in state["cmap"].items()}
        self.next_code = int(state["next_code"])
        if not state["fitted"]:
            r = state["ref"]
            if self.n_buf:
                self.ref_buf = {
                    "X": [np.asarray(r["X"], dtype=np.float64)],
                    "C": [np.array(r["C"], dtype=object).reshape(self.n_buf, -1)],
                    "pred": list(r["pred"]),
                    "pval": [np.asarray(r["pval"], dtype=np.float64)],
                    "out": [np.asarray(r["out"], dtype=np.float64)],
                    "cid": [np.asarray(r["cid"], dtype=np.int64)],
                    "ts": [np.asarray(r["ts"], dtype=np.float64)],
                }
            return
        mdl = dict(state["model"])
        for key in ("ref_p", "edges", "lo_hi", "ref_loc", "ref_spread", "tab", "mu", "tau2", "sigw", "vref"):
            mdl[key] = np.asarray(mdl[key], dtype=np.float64)
        for key in ("chan", "kind"):
            mdl[key] = np.asarray(mdl[key], dtype=np.int64)
        for key in ("pca_med", "pca_scale", "pca_proj", "pca_basis"):
            if key in mdl:
                mdl[key] = np.asarray(mdl[key], dtype=np.float64)
        mdl["labels"] = list(mdl["labels"])
        mdl["names"] = list(mdl["names"])
        mdl["cat_maps"] = [{str(k): int(v) for k, v in cm.items()} for cm in mdl["cat_maps"]]
        self.model = mdl
        self.fitted = True
        self.threshold = float(state["threshold"])
        self.calibration = dict(state["calibration"])
        self.hist_bins = np.asarray(state["hist_bins"], dtype=np.uint8).reshape(-1, len(mdl["names"]))
        self.hist_codes = np.asarray(state["hist_codes"], dtype=np.int64)
        self.hist_ts = np.asarray(state["hist_ts"], dtype=np.float64)
        self.blocks = np.asarray(state["blocks"], dtype=np.int64).reshape(-1, len(mdl["names"]), self.n_bins_total)
        self.episode = None if state["episode"] is None else dict(state["episode"])


def _r(x: float) -> float | None:
    v = float(x)
    return None if not np.isfinite(v) else round(v, 6)


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
