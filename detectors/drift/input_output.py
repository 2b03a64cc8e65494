"""``drift``: calibrated, caller-aware drift detection on inputs, outputs and their joint structure.

Algorithm (one instance per route; details and rationale in ``docs/drift.md``):

1. **Reference.** The first ``reference_size`` events of the route (or the ``reference`` arrays)
   are fitted robustly: within every block of ``block_size`` events a caller contributes at most
   ``caller_cap * block_size`` events (its first ones; the rest are dropped from every statistic,
   here and when monitoring), bin edges are quantiles of the kept events, and the multivariate
   projection uses a median/MAD-scaled, winsorised covariance. A few outliers or attack queries
   move a quantile by at most their share.
2. **Channels.** Numeric channels are the numeric features, the output summaries (confidence,
   margin, entropy; when the reference has probabilities), the class probabilities themselves
   (``output:P(<class>)``, the ``max_class_channels`` most probable classes, one redundant column
   left out; their location score is the bin's reference mean probability, so a window mean
   estimates the mean posterior, which moves with the class prior), and whitened principal
   components of the features (top ``n_components``, their squared norm and the squared residual). Every value
   is mapped to one of ``n_bins`` reference-quantile bins or a missing bin. Categorical channels
   (string features and the predicted class) map to the reference's frequent categories,
   ``other`` and missing. Each channel yields linear scores: location (centred mid-rank, a
   Mann-Whitney-type score), spread (squared normal score of the mid-rank, Klotz-type) and
   missing rate for numeric channels; one indicator per category for categorical ones. Integer
   bin counts make every window statistic exact and independent of how the stream was cut into
   batches. A window mean becomes a z-score by the signed root of the reference score
   distribution's tilt deviance (accurate far tails for skewed and bounded scores alike).
3. **Tests.** *Single* tests: every numeric channel's location, spread and missing rate, and the
   ``other``/``missing`` share of every categorical channel. *Joint* tests (quadratic forms of
   the standardised scores, whitened with their reference correlation, referred to chi-square):
   the locations of all numeric input features, their spreads, the output summaries together,
   the class probabilities' locations together, and each categorical channel's full category mix
   (the predicted-class distribution is one test). A joint test is converted to the |z| with the same two-sided tail probability, so all
   tests share one threshold; a genomic-control factor measured on the caller-resampled null
   stream deflates a joint test whose null median exceeds the chi-square median.
4. **Windows.** Every ``block_size`` events of the route a window closes; statistics are computed
   over the last ``L`` events for every ``L`` in ``window_sizes``. The variance of a window mean
   follows a random-effects model over callers (between-caller variance estimated from the
   reference, floored at ``min_caller_correlation``), a between-time component (the excess
   variance of the reference's consecutive time-block means, a block effect that does not shrink
   with the window's count) and the reference's own estimation error;
   windows with fewer than ``min_effective_callers`` effective callers are not tested. All closes
   of a batch are evaluated together (vectorised), without per-window Python loops.
5. **Calibration.** The window statistic is the max over all tests and window sizes. Its
   threshold is set so that alarm *episodes* occur once per ``context.events_between_false_alarms``
   events on a null stream simulated by resampling the reference **by caller run** (seeded by
   ``context.seed``): empirically when the budget is small, by a Bonferroni bound over all tests
   and closes otherwise.
6. **Episodes.** The first window over the threshold raises a finding at its closing event; no
   further finding while the statistic stays high; after ``quiet_windows`` consecutive windows
   below the threshold an update finding (same trigger, ``is_update=True``) closes the episode.
   The reference is kept (no re-referencing), so a persistent drift stays one open episode.

Modules: ``settings`` (hyper-parameters), ``callers`` (caller codes, cap, caller-square sums),
``channels`` (numeric matrix, bins), ``reference`` (the fit), ``scores`` (z-scores, tilt roots),
``covariance`` and ``temporal`` (those tests' parts), ``scan`` (vectorised windows),
``calibration`` (threshold), ``explain`` and ``summaries`` (findings, dashboard rows), ``growth``
(the books of reference growth); this module orchestrates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from detectors.base import (
    EMPTY_OUTPUT,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    Kind,
    WindowStat,
    budget_explanation,
    register,
)
from detectors.drift.buffer import ReferenceBuffer
from detectors.drift.calibration import calibrate
from detectors.drift.callers import caller_codes, variance_codes
from detectors.drift.channels import OUTPUTS, assign_bins, numeric_matrix, to_float
from detectors.drift.coverage import CoverageWatch, coverage_notice
from detectors.drift.explain import explain, top_callers, window_info, window_stats
from detectors.drift.growth import ReferenceGrowth
from detectors.drift.reference import fit_reference, load_model, refit_caller_shares, refit_moments
from detectors.drift.scan import CHUNK_BLOCKS, ScanState, n_pp, scan_chunk, statistic
from detectors.drift.settings import DriftSettings, drift_settings
from detectors.drift.temporal import temporal_gc, time_block_stats
from detectors.episodes import EpisodeTracker
from pipeline.events import EventBatch


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
    block_size : int, default 50
        A window closes every ``block_size`` events of the route.
    window_sizes : tuple of int, default (100, 200, 400, 1000)
        Window lengths in events (multiples of ``block_size``); all tested at every close.
    n_bins : int, default 16
        Reference-quantile bins per numeric channel.
    bin_span : float, default 2.33
        The bins' edges are the reference quantiles at ``Phi(z)`` for ``n_bins - 1`` values of
        ``z`` evenly spaced on ``[-bin_span, bin_span]`` (the outer bins hold 1% each at 2.33):
        finer in the tails, where a change of spread shows. ``0`` = equal-probability bins.
    n_components : int, default 8
        Number of top principal components monitored, with their squared norm and the
        squared reconstruction residual (0 disables multivariate channels).
    max_categories : int, default 20
        Most frequent reference categories kept per categorical channel (rest is ``other``).
    min_category_freq : float, default 0.02
        Categories rarer than this in the reference are pooled into ``other``.
    caller_cap : float, default 0.02
        Within every block a caller contributes at most ``max(1, round(caller_cap * block_size))``
        events (its first ones), so no caller holds more than about this share of any window.
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
    cov_dims : int, default 16
        Whitened directions of the covariance test ``inputs:covariance`` (0 disables it).
    cov_caller_blocks : int, default 8
        The covariance test counts at most one event per caller in every ``cov_caller_blocks``
        consecutive blocks (a stricter cap than ``caller_cap``): products of near-identical points
        all push the second moments the same way, so one persistent caller must hold only a small
        share of any window.
    cov_min_events : float, default 2.0
        The covariance test is evaluated only on windows with at least ``cov_min_events * r``
        events it keeps (``r`` whitened directions): with fewer, the window's second moments are
        too noisy for a chi-square-like null.
    anonymous_run : int, default 50
        Events without a ``client_id`` are grouped, for the variance model only, into
        pseudo-callers of this many consecutive positions.
    anonymous_share : float or None, default 0.5
        Events without a ``client_id`` together count as one caller for the caller cap (at most
        ``round(caller_cap * block_size)`` of them kept per block), unless the route is mostly
        anonymous: its median reference block holds more than this share of anonymous events (then
        each is its own caller and nothing is dropped; ``None``: always so). Whoever sends without
        an id into a route of named callers (an internal batch job, a health check) may be one
        source, and its burst must not fill windows with its own mix.
    spread_score : {"normal", "rank"}, default "normal"
        Spread score of a value in a reference bin with mid-rank ``u``: ``Phi^-1(u)^2``
        (Klotz-type, efficient for scale changes) or ``|2u - 1|`` (Ansari-Bradley-type).
    max_class_channels : int, default 10
        Class probabilities monitored as numeric output channels ``output:P(<class>)`` (location
        and spread scores, and their locations jointly in ``outputs:probabilities``): the classes
        with the largest mean reference probability, at most this many (0 disables them). A binary
        model gets one channel (the rarer class; the other column is its complement).
    max_reference_size : int, default 20000
        A reference made of the route's first events keeps growing with monitored blocks once they
        have left the largest window, up to this many events; a block joins only if no window that
        contained it crossed the threshold (a raised drift is never learnt). Every
        ``reference_size`` absorbed events the reference moments are refitted (means, variances,
        tails, between-time variance; bins, projections and whitening stay; at 4x the calibrated size
        and at the cap the caller shares and the calibration are redone on the grown events), so the
        reference's own estimation error shrinks (a persistent small class-mix shift becomes
        visible) and it covers more of a daily cycle. ``reference_size`` or less disables growth;
        a ``reference`` mapping (or ``reference_file``) never grows.
    temporal_block : int or None, default None
        Events per time block of the reference for the between-time variance component (``None``:
        the largest window, fewer if the reference holds fewer than 8 such blocks; 0 disables it).
        Score columns whose block means vary more than the caller model explains (the time-of-day
        mix of regions, sites or sessions) get that excess added to every live window's variance.

    Examples
    --------
    >>> from detectors.base import DetectorContext
    >>> from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays
    >>> rng = np.random.default_rng(0)
    >>> ctx = DetectorContext(RouteKey("m", "1"), FeatureSchema(("a", "b", "c")), seed=1)
    >>> det = DriftDetector(ctx, calibration_events=20000)
    >>> X = rng.normal(size=(5000, 3))
    >>> X[3500:, 1] += 1.0  # feature "b" moves at event 3500: flagged 50 events later
    >>> callers = [f"c{i}" for i in rng.integers(0, 500, size=5000)]
    >>> out = det.process(batch_from_arrays(X, schema=ctx.schema, client_ids=callers))
    >>> f = out.findings[0]
    >>> f.trigger_event_id, f.explanation["top"][0]["stat"]
    ('e3549', 'feature:b')
    """

    name: ClassVar[str] = "drift"
    consumes: ClassVar[str] = "events"
    state_version: ClassVar[int] = 9

    def __init__(
        self,
        context: DetectorContext,
        *,
        reference_size: int = 2000,
        reference: Mapping[str, Any] | None = None,
        block_size: int = 50,
        window_sizes: Sequence[int] = (100, 200, 400, 1000),
        n_bins: int = 16,
        bin_span: float = 2.33,
        n_components: int = 8,
        max_categories: int = 20,
        min_category_freq: float = 0.02,
        caller_cap: float = 0.02,
        min_effective_callers: float = 20.0,
        min_caller_correlation: float = 0.05,
        quiet_windows: int = 5,
        calibration_events: int = 100_000,
        top_k: int = 5,
        cov_dims: int = 16,
        cov_caller_blocks: int = 8,
        cov_min_events: float = 2.0,
        anonymous_run: int = 50,
        anonymous_share: float | None = 0.5,
        spread_score: str = "normal",
        max_class_channels: int = 10,
        temporal_block: int | None = None,
        max_reference_size: int = 20_000,
    ) -> None:
        params: dict[str, Any] = dict(
            reference_size=reference_size, reference=reference, block_size=block_size,
            window_sizes=[int(w) for w in window_sizes], n_bins=n_bins, bin_span=bin_span, n_components=n_components,
            max_categories=max_categories, min_category_freq=min_category_freq, caller_cap=caller_cap,
            min_effective_callers=min_effective_callers, min_caller_correlation=min_caller_correlation,
            quiet_windows=quiet_windows, calibration_events=calibration_events, top_k=top_k, cov_dims=cov_dims,
            cov_caller_blocks=cov_caller_blocks, cov_min_events=cov_min_events, anonymous_run=anonymous_run,
            anonymous_share=anonymous_share,
            spread_score=spread_score, max_class_channels=max_class_channels, temporal_block=temporal_block,
            max_reference_size=max_reference_size,
        )
        super().__init__(context, **params)
        del params["reference"]
        self.settings: DriftSettings = drift_settings(context, **params)
        if reference is not None and "X" not in reference:
            raise ValueError("reference must contain an 'X' array of shape (n, d)")
        self._reset()
        if reference is not None:
            self._fit_from_mapping(reference)

    # ------------------------------------------------------------------ state containers
    def _reset(self) -> None:
        s = self.settings
        self.fitted = False
        self.ref_buf = ReferenceBuffer()  # the first events, until the reference is complete
        self.classes: tuple[str, ...] | None = None  # class names of the probability columns (first batch with any)
        self._prob_align: tuple[tuple[str, ...], np.ndarray] | None = None
        self.n_buf = 0
        self.cmap: dict[str, int] = {}
        self.next_code = 0
        self.n_seen = 0  # events of the route seen
        self.n_mon = 0  # events seen after the reference
        self.n_blocks = 0  # monitored blocks completed
        self.pend_bins = np.empty((0, 0), dtype=np.uint8)  # events of the incomplete block
        self.pend_codes = np.empty(0, dtype=np.int64)
        self.pend_ts = np.empty(0, dtype=np.float64)
        self.hist_codes = np.empty(0, dtype=np.int64)  # last hist_len events of complete blocks
        self.hist_keep = np.empty(0, dtype=bool)
        self.hist_ts = np.empty(0, dtype=np.float64)
        self.hist_bins = np.empty((0, 0), dtype=np.uint8)
        self.calibrated_at = 0
        self.blocks = np.empty((0, 0, s.n_bins_total), dtype=np.int64)
        self.block_cs = np.empty((0, 0), dtype=np.float64)
        self.block_sw = np.empty(0, dtype=np.int64)
        self.block_pp = np.empty((0, 0), dtype=np.float64)
        self.episodes = EpisodeTracker(Kind.DRIFT, self.name, self.config_hash, float("nan"), s.quiet_windows)
        self.coverage = CoverageWatch(max(s.window_sizes) // s.block_size)
        self.model: dict[str, Any] = {}
        self.growth: ReferenceGrowth | None = None

    # ------------------------------------------------------------------ reference fitting
    def _fit_from_mapping(self, ref: Mapping[str, Any]) -> None:
        X = np.asarray(ref["X"], dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 200:
            raise ValueError("reference['X'] must be 2-D with at least 200 rows")
        n = X.shape[0]
        C = np.asarray(ref.get("C", np.empty((n, 0), dtype=object)), dtype=object)
        pred = [str(p) for p in ref["prediction"]] if "prediction" in ref else None
        outs = np.column_stack(
            [np.asarray(ref.get(k, np.full(n, np.nan)), dtype=np.float64) for k in OUTPUTS]
        )
        cids = list(ref.get("client_ids", [None] * n))
        ts = np.asarray(ref.get("ts", np.arange(n, dtype=np.float64)), dtype=np.float64)
        codes, _ = caller_codes(cids, {}, 0, 0)
        pval = (
            np.array([to_float(p) for p in pred], dtype=np.float64) if pred is not None else np.full(n, np.nan)
        )
        probs = np.asarray(ref.get("probabilities", np.empty((n, 0))), dtype=np.float64).reshape(n, -1)
        classes = tuple(ref.get("classes", ())) or self.context.schema.classes
        if probs.shape[1]:
            self.classes = tuple(str(c) for c in classes) if len(classes) == probs.shape[1] else tuple(
                str(i) for i in range(probs.shape[1])
            )
        self._fit(X, C, pred, pval, outs, codes, ts, source="reference param", probs=probs)

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
        probs: np.ndarray | None = None,
    ) -> None:
        """Fit the reference, calibrate the threshold on its caller-resampled null stream, start monitoring."""
        s = self.settings
        fit = fit_reference(
            X, C, pred, pval, outs, codes, ts, source, probs, s=s, schema=self.context.schema, classes=self.classes
        )
        self.model = model = fit.model
        self.threshold, self.calibration = calibrate(model, s, fit.bins, codes, self.context.seed)
        model["group_gc_sim"] = model["group_gc"].copy()
        model["group_gc_time"] = self._temporal_gc(*fit.time_blocks) if fit.time_blocks is not None else np.ones_like(
            model["group_gc"]
        )
        model["group_gc"] = model["group_gc_sim"] * model["group_gc_time"]
        self._record_temporal()
        self.episodes.threshold = float(self.threshold)
        self.fitted = True
        self._start_monitoring()
        self.growth = None
        n = X.shape[0]
        self.calibrated_at = n
        if source.startswith("first") and s.max_reference_size > n:
            self.growth = self._new_growth(fit.scores, fit.kept, fit.vcodes, n)
            self.growth.keep_events = True
            self.growth.ev_bins, self.growth.ev_codes = [fit.bins], [codes]

    def _temporal_gc(self, sums: np.ndarray, n_b: np.ndarray, a_b: np.ndarray) -> np.ndarray:
        """The joint tests' time-block inflation factors (see :func:`temporal.temporal_gc`)."""
        return temporal_gc(self.model, sums, n_b, a_b)

    def _record_temporal(self) -> None:
        """Copy the between-time variance summary and the joint tests' time-block factors into the
        calibration record (shown in every explanation)."""
        m = self.model
        self.calibration["temporal"] = dict(m["temporal"])
        self.calibration["temporal"]["joint_inflation"] = {
            nm: round(float(v), 4) for nm, v in zip(m["group_names"], m["group_gc_time"], strict=True) if v > 1
        }

    def _new_growth(self, S: np.ndarray, kept: np.ndarray, vcodes: np.ndarray, n: int) -> ReferenceGrowth:
        """Growth books for a first-events reference, holding its callers and complete time blocks."""
        s = self.settings
        step = s.block_size
        codes, cnt = np.unique(vcodes[kept], return_counts=True)
        B = s.temporal_block
        g = ReferenceGrowth(
            n_chan=len(self.model["names"]),
            n_bins=s.n_bins_total,
            n_cols=S.shape[1],
            events=n,
            max_events=s.max_reference_size,
            block_size=step,
            time_blocks=B // step if B > 0 else 0,
            callers=dict(zip(codes.tolist(), cnt.tolist(), strict=True)),
        )
        if B > 0 and n // B:
            sums, n_b, a_b = time_block_stats(S, kept, vcodes, B)
            g.time_sums, g.time_kept, g.time_a = list(sums), n_b.tolist(), a_b.tolist()
        return g

    def _start_monitoring(self) -> None:
        nch = len(self.model["names"])
        self.pend_bins = np.empty((0, nch), dtype=np.uint8)
        self.blocks = np.zeros((0, nch, self.settings.n_bins_total), dtype=np.int64)
        self.block_cs = np.zeros((0, len(self.model["chan"])), dtype=np.float64)
        self.block_sw = np.zeros(0, dtype=np.int64)
        self.block_pp = np.zeros((0, n_pp(self.model)), dtype=np.float64)
        self.hist_bins = np.zeros((0, nch), dtype=np.uint8)

    # ------------------------------------------------------------------ monitoring
    def process(self, batch: EventBatch) -> DetectorOutput:
        n = len(batch)
        if n == 0:
            return EMPTY_OUTPUT
        outs = np.column_stack([batch.confidence, batch.margin, batch.entropy])
        codes, self.next_code = caller_codes(batch.client_ids, self.cmap, self.n_seen, self.next_code)
        probs = self._aligned_probabilities(batch)
        start = 0
        if not self.fitted:
            size = self.settings.reference_size
            take = min(n, size - self.n_buf)
            self.ref_buf.append(batch, outs, probs, codes, take)
            self.n_buf += take
            self.n_seen += take
            start = take
            if self.n_buf >= size:
                X, C, pred, pval, out, cid, ts, prob = self.ref_buf.arrays()
                self._fit(X, C, pred, pval, out, cid, ts, source=f"first {size} events", probs=prob)
                self.ref_buf = ReferenceBuffer()
            if start >= n:
                return EMPTY_OUTPUT
        sl = slice(start, n)
        m = self.model
        Zn = numeric_matrix(batch.X[sl], outs[sl], batch.prediction_value[sl], m, probs[sl])
        bins_new = assign_bins(Zn, batch.C[sl], batch.prediction[start:], m, self.settings.missing_bin)
        return self._monitor(bins_new, codes[sl], batch.ts[sl], batch.event_ids[start:])

    def _aligned_probabilities(self, batch: EventBatch) -> np.ndarray:
        """The batch's class probabilities as columns of ``self.classes`` (fixed by the first batch with any).

        Columns are matched by class name, so a batch whose schema lists the classes in another
        order, or lacks some, still lines up (absent classes are ``NaN``).
        """
        P = np.asarray(batch.probabilities, dtype=np.float64)
        n = len(batch)
        if P.ndim != 2 or P.shape[0] != n:
            P = np.empty((n, 0))
        have = tuple(batch.schema.classes) if len(batch.schema.classes) == P.shape[1] else tuple(
            str(i) for i in range(P.shape[1])
        )
        if self.classes is None:
            if P.shape[1] == 0:
                return P
            self.classes = have
        if have == self.classes:
            return P
        if self._prob_align is None or self._prob_align[0] != have:
            pos = {c: i for i, c in enumerate(have)}
            self._prob_align = (have, np.array([pos.get(c, -1) for c in self.classes], dtype=np.int64))
        idx = self._prob_align[1]
        out = np.full((n, len(self.classes)), np.nan)
        hit = idx >= 0
        out[:, hit] = P[:, idx[hit]]
        return out

    def _monitor(self, bins_new: np.ndarray, codes_new: np.ndarray, ts_new: np.ndarray, ids: list[str]) -> DetectorOutput:
        step = self.settings.block_size
        npend = len(self.pend_codes)
        bins = np.concatenate([self.pend_bins, bins_new])
        codes = np.concatenate([self.pend_codes, codes_new])
        ts = np.concatenate([self.pend_ts, ts_new])
        n_full = (len(codes) // step) * step
        findings: list[Finding] = []
        stats: list[WindowStat] = []
        # chunks end at absolute multiples of CHUNK_BLOCKS blocks, where a grown reference takes
        # effect, so the closes each reference judges do not depend on batch cuts
        chunk = CHUNK_BLOCKS * step
        first = chunk - (self.n_blocks * step) % chunk
        cuts = [0, *range(first, n_full, chunk), n_full]
        for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True):
            if c1 > c0:
                self._monitor_blocks(bins[c0:c1], codes[c0:c1], ts[c0:c1], ids, c0 - npend, findings, stats)
        self.pend_bins = bins[n_full:].copy()
        self.pend_codes = codes[n_full:].copy()
        self.pend_ts = ts[n_full:].copy()
        self.n_mon += len(codes_new)
        self.n_seen += len(codes_new)
        if len(self.cmap) > 200_000:
            self._prune_callers()
        return DetectorOutput(findings=tuple(findings), stats=tuple(stats))

    def _monitor_blocks(
        self,
        bins_c: np.ndarray,
        codes_c: np.ndarray,
        ts_c: np.ndarray,
        ids: list[str],
        id_off: int,
        findings: list[Finding],
        stats: list[WindowStat],
    ) -> None:
        nh = len(self.hist_codes)
        s = self.settings
        state = ScanState(
            self.blocks, self.block_cs, self.block_sw, self.hist_codes, self.hist_keep, self.n_blocks, self.block_pp
        )
        res, new_state = scan_chunk(self.model, s, bins_c, codes_c, state, True, True)
        span_ts = np.concatenate([self.hist_ts, ts_c])
        per_w, zeq, best_w = statistic(self.model, res)
        big = max(s.window_sizes)
        for j in range(len(best_w)):
            w = int(best_w[j])
            best = float(per_w[j, w])
            e = int(res["ends"][j])
            n_here = int(res["n_here"][j])
            close_ts = float(span_ts[e - 1])

            def describe(j: int = j, w: int = w, e: int = e, n_here: int = n_here, best: float = best) -> dict[str, Any]:
                L = s.window_sizes[w]
                info = window_info(self.model, s, res, zeq, j, w)
                info["top_callers"] = top_callers(np.concatenate([self.hist_codes, codes_c])[max(e - L, 0) : e], self.cmap)
                return {
                    "trigger": ids[e - nh - 1 + id_off],
                    "window_start": float(span_ts[e - L]) if e - L >= 0 else float("nan"),
                    "explanation": explain(
                        self.model, s, res["z"][j, w], info, best, L, n_here, threshold=self.threshold,
                        calibration=self.calibration, config_hash=self.config_hash, schema=self.context.schema,
                        budget=budget_explanation(self.context),
                    ),
                }

            finding = self.episodes.observe(best, close_ts, describe)
            if finding is not None:
                findings.append(finding)
            # a route whose mature windows never hold enough callers is never tested: say so once
            if self.coverage.observe(n_here >= big and not res["valid"][j].any()):
                codes_w = np.concatenate([self.hist_codes, codes_c])[max(e - big, 0) : e]
                findings.append(coverage_notice(
                    self.name, self.config_hash, ids[e - nh - 1 + id_off], close_ts, float(span_ts[max(e - big, 0)]),
                    {L: float(res["eff"][j, w_]) for w_, L in enumerate(s.window_sizes)}, s.min_effective_callers,
                    top_callers(codes_w, self.cmap),
                ))
            last = len(s.window_sizes) - 1
            if n_here % big == 0 and res["valid"][j, last]:
                info = window_info(self.model, s, res, zeq, j, last)
                stats.extend(window_stats(
                    self.model, s, self.name, res["z"][j, last], info, n_here // big - 1, float(span_ts[e - big]),
                    close_ts, best, self.threshold,
                ))
        span_bins = np.concatenate([self.hist_bins, bins_c]) if self.growth is not None and self.growth.keep_events else bins_c
        if self.growth is not None and self.growth.active:
            self._absorb(res, per_w.max(1), np.concatenate([self.hist_codes, codes_c]), span_ts, len(self.blocks),
                         span_bins)
        (
            self.blocks, self.block_cs, self.block_sw, self.hist_codes, self.hist_keep, self.n_blocks, self.block_pp
        ) = new_state
        self.hist_ts = span_ts[-s.hist_len :].copy()
        if self.growth is not None and self.growth.keep_events:
            self.hist_bins = span_bins[-s.hist_len :].copy()
        if self.growth is not None and self.n_blocks % CHUNK_BLOCKS == 0 and self.growth.due():
            self._grow_reference()

    def _absorb(
        self, res: dict[str, Any], stats: np.ndarray, span_codes: np.ndarray, span_ts: np.ndarray, nb0: int,
        span_bins: np.ndarray,
    ) -> None:
        """Hand the blocks that no later window can contain to the growth books, if every window that
        contained them stayed below the threshold (``stats``: the chunk's closes' statistics)."""
        g = self.growth
        assert g is not None
        step, m = self.settings.block_size, self.model
        span = max(self.settings.window_sizes) // step
        first_close = int(res["n_here"][0]) // step - 1
        c0 = first_close - len(g.recent_stats)
        quiet = g.quiet_blocks(first_close, stats, float(self.threshold), span)
        if not len(quiet):
            return
        allb = res["allb"]
        first_abs = first_close - nb0  # block number of allb[0]
        vcodes = variance_codes(span_codes, self.settings.anonymous_run)
        keep = res["span_keep"]
        for i, ok in enumerate(quiet.tolist()):
            b = c0 + i
            if not g.can_absorb(b):
                continue
            if not ok:
                g.skip(b)
                continue
            j = b - first_abs
            p0 = len(span_codes) - (len(allb) - j) * step
            sl = slice(p0, p0 + step)
            sums = np.einsum("cb,cb->c", allb[j][m["chan"], :].astype(np.float64), m["tab"])
            g.absorb(b, allb[j], sums, vcodes[sl][keep[sl]], float(span_ts[p0 + step - 1]),
                     (span_bins[sl], span_codes[sl]) if g.keep_events else None)

    def _grow_reference(self) -> None:
        """Refit the reference moments from the grown bin counts (bins, projections and whitening
        stay): means, variances, tails, between-time variance, explanation summaries; at 4x the
        calibrated size and at the cap also caller shares and the calibration (:meth:`_recalibrate`)."""
        g = self.growth
        assert g is not None
        m = self.model
        total = g.events + g.pending_events
        recalibrate = g.keep_events and (total >= 4 * self.calibrated_at or total >= g.max_events)
        if recalibrate:
            bins, codes = g.reference_events()
            refit_caller_shares(m, bins, codes, self.settings)
        blocks = refit_moments(m, g, self.settings)
        if blocks is not None:
            m["group_gc_time"] = np.maximum(m["group_gc_time"], self._temporal_gc(*blocks))
            m["group_gc"] = m["group_gc_sim"] * m["group_gc_time"]
        if recalibrate:
            self._recalibrate(bins, codes)
        if blocks is not None or recalibrate:
            self._record_temporal()

    def _recalibrate(self, bins: np.ndarray, codes: np.ndarray) -> None:
        """Recalibrate on the grown reference's events (their caller-resampled null stream): joint
        tests' genomic control and the threshold. The first reference's callers are few (a batch
        client with its own class mix may not be among them), so its null is lighter in the far tail
        than the traffic that follows (measured: x1.2-1.6 more alarms than small budgets allow at
        16-64 features); the grown reference has met many more. Done when the reference has grown
        fourfold since its last calibration and at its cap; then its events are dropped."""
        g = self.growth
        assert g is not None
        m = self.model
        if m.get("cov_r", 0):  # the covariance test's Satterthwaite degrees of freedom start nominal again
            m["group_dof"][m["group_names"].index("inputs:covariance")] = float(len(m["cov_mu"]))
        previous = float(self.threshold)
        self.threshold, calibration = calibrate(m, self.settings, bins, codes, self.context.seed)
        calibration["recalibrated"] = {"reference_events": int(len(codes)), "previous_threshold": round(previous, 4)}
        self.calibration = calibration
        m["group_gc_sim"] = m["group_gc"].copy()
        m["group_gc"] = m["group_gc_sim"] * m["group_gc_time"]
        self.episodes.threshold = float(self.threshold)
        self.calibrated_at = int(len(codes))
        if g.events + g.pending_events >= g.max_events:
            g.drop_events()
            self.hist_bins = np.zeros((0, len(m["names"])), dtype=np.uint8)

    def _prune_callers(self) -> None:
        live = set(int(c) for c in np.concatenate([self.hist_codes, self.pend_codes]) if c >= 0)
        self.cmap = {k: v for k, v in self.cmap.items() if v in live}

    # ------------------------------------------------------------------ state
    def _get_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "fitted": self.fitted,
            "n_seen": self.n_seen,
            "n_mon": self.n_mon,
            "n_buf": self.n_buf,
            "cmap": dict(self.cmap),
            "next_code": self.next_code,
            "classes": list(self.classes) if self.classes is not None else None,
        }
        if not self.fitted:
            st["ref"] = self.ref_buf.state()
            return st
        st["model"] = dict(self.model)
        st["threshold"] = float(self.threshold)
        st["calibration"] = dict(self.calibration)
        st["n_blocks"] = self.n_blocks
        st["pend_bins"] = self.pend_bins.copy()
        st["pend_codes"] = self.pend_codes.copy()
        st["pend_ts"] = self.pend_ts.copy()
        st["hist_codes"] = self.hist_codes.copy()
        st["hist_keep"] = self.hist_keep.copy()
        st["hist_ts"] = self.hist_ts.copy()
        st["hist_bins"] = self.hist_bins.copy()
        st["calibrated_at"] = self.calibrated_at
        st["blocks"] = self.blocks.copy()
        st["block_cs"] = self.block_cs.copy()
        st["block_sw"] = self.block_sw.copy()
        st["block_pp"] = self.block_pp.copy()
        st["episode"] = self.episodes.state()
        st["coverage"] = self.coverage.state()
        st["growth"] = self.growth.state() if self.growth is not None else None
        return st

    def _set_state(self, state: dict[str, Any]) -> None:
        s = self.settings
        self._reset()
        self.n_seen = int(state["n_seen"])
        self.n_mon = int(state["n_mon"])
        self.n_buf = int(state["n_buf"])
        self.cmap = {str(k): int(v) for k, v in state["cmap"].items()}
        self.next_code = int(state["next_code"])
        self.classes = tuple(str(c) for c in state["classes"]) if state["classes"] is not None else None
        if not state["fitted"]:
            self.ref_buf.load(state["ref"], self.n_buf)
            return
        self.model = mdl = load_model(state["model"], self.settings)
        self.fitted = True
        self.threshold = float(state["threshold"])
        self.episodes.threshold = self.threshold
        self.calibration = dict(state["calibration"])
        self.n_blocks = int(state["n_blocks"])
        self.pend_bins = np.asarray(state["pend_bins"], dtype=np.uint8).reshape(-1, len(mdl["names"]))
        self.pend_codes = np.asarray(state["pend_codes"], dtype=np.int64)
        self.pend_ts = np.asarray(state["pend_ts"], dtype=np.float64)
        self.hist_codes = np.asarray(state["hist_codes"], dtype=np.int64)
        self.hist_keep = np.asarray(state["hist_keep"], dtype=bool)
        self.hist_ts = np.asarray(state["hist_ts"], dtype=np.float64)
        self.hist_bins = np.asarray(state["hist_bins"], dtype=np.uint8).reshape(-1, len(mdl["names"]))
        self.calibrated_at = int(state["calibrated_at"])
        self.blocks = np.asarray(state["blocks"], dtype=np.int64).reshape(-1, len(mdl["names"]), s.n_bins_total)
        self.block_cs = np.asarray(state["block_cs"], dtype=np.float64).reshape(-1, len(mdl["chan"]))
        self.block_sw = np.asarray(state["block_sw"], dtype=np.int64)
        npp = n_pp(mdl)
        self.block_pp = np.asarray(state["block_pp"], dtype=np.float64).reshape(len(self.block_sw), npp)
        self.episodes.load(state["episode"])
        self.coverage.load(state.get("coverage"))  # absent in states written before session 7
        self.growth = None
        if state["growth"] is not None:
            self.growth = ReferenceGrowth(
                n_chan=len(mdl["names"]),
                n_bins=s.n_bins_total,
                n_cols=len(mdl["chan"]),
                events=0,
                max_events=s.max_reference_size,
                block_size=s.block_size,
                time_blocks=s.temporal_block // s.block_size if s.temporal_block > 0 else 0,
                callers={},
            )
            self.growth.load(state["growth"])
