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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any, ClassVar

import numpy as np
from scipy.special import chdtrc, chdtri, ndtri

from detectors.base import (
    EMPTY_OUTPUT,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    Kind,
    WindowStat,
    register,
)
from detectors.drift._stats import (
    calibrate_threshold,
    signed_root_binomial,
    tilt_root_table,
    weighted_quantiles,
)
from detectors.drift.growth import ReferenceGrowth
from detectors.episodes import EpisodeTracker
from pipeline.events import EventBatch

_OUTPUTS = ("confidence", "margin", "entropy")
_LINEAR, _INDICATOR = 0, 1
_GRID = float(2**20)
_CHUNK_BLOCKS = 40  # closes evaluated together (bounds the memory of the vectorised scan)
_TILT_GRID = 513  # points of a tabulated tilt root


def _caller_codes(
    client_ids: Sequence[str | None], cmap: dict[str, int], start: int, next_code: int
) -> tuple[np.ndarray, int]:
    """Integer caller codes: >= 0 for named callers, a unique negative code for anonymous events.

    Codes only need to be equal for equal callers within one window, so ``cmap`` may be pruned.
    """
    # map() with the dict's own lookup: no Python frame per event (None is never a key: -2 -> -1 below)
    codes = np.fromiter(map(cmap.get, client_ids, repeat(-2, len(client_ids))),  # type: ignore[arg-type]
                        dtype=np.int64, count=len(client_ids))
    for i in np.flatnonzero(codes == -2).tolist():  # callers seen for the first time, in stream order
        c = client_ids[i]
        if c is None:
            codes[i] = -1
            continue
        code = cmap.get(c)  # type: ignore[arg-type]
        if code is None:
            code = next_code
            next_code += 1
            cmap[c] = code  # type: ignore[index]
        codes[i] = code
    anon = np.flatnonzero(codes == -1)
    codes[anon] = -(start + anon + 1)
    return codes, next_code


def _cumrows(a: np.ndarray) -> np.ndarray:
    """Cumulative sums over rows with a leading zero row (``out[i] = a[:i].sum(0)``).

    Row by row, in the same order as ``np.cumsum(a, axis=0)`` (so the same result), but several
    times faster for the few-rows, many-columns arrays of block sums.
    """
    out = np.empty((len(a) + 1, a.shape[1]))
    out[0] = 0.0
    for i in range(len(a)):
        np.add(out[i], a[i], out=out[i + 1])
    return out


def _variance_codes(codes: np.ndarray, run: int) -> np.ndarray:
    """Caller codes for the variance model: anonymous events share a pseudo-caller per ``run`` positions.

    An anonymous event's code is ``-(position + 1)``; consecutive positions ``[k run, (k+1) run)``
    become pseudo-caller ``-(k + 1)``, so serial dependence (a batch job's burst) among anonymous
    events enters the between-caller variance. The caller cap still sees every anonymous event
    as its own caller (nothing is dropped).

    >>> _variance_codes(np.array([-1, -2, 4, -4, -5]), 2).tolist()
    [-1, -1, 4, -2, -3]
    """
    return np.where(codes < 0, -1 - (-codes - 1) // run, codes)


def _keep_mask(codes: np.ndarray, step: int, cap: int, offset: int = 0) -> np.ndarray:
    """``True`` for the first ``cap`` events of each caller within each block of ``step`` events.

    Blocks start at position ``-offset`` (index ``i`` lies in block ``(i + offset) // step``). Dropping a heavy caller's surplus (rather than down-weighting it)
    keeps every count an integer, which keeps window statistics exact under any batch cut.

    >>> _keep_mask(np.array([5, 5, 5, 7, 5, 5]), 3, 2).tolist()
    [True, True, False, True, True, True]
    >>> _keep_mask(np.array([5, 5, 5, 7, 5, 5]), 4, 1, offset=2).tolist()
    [True, False, True, True, False, False]
    """
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    blk = (np.arange(n) + offset) // step
    order = np.lexsort((codes, blk))  # stable: stream order within (block, caller)
    sb, sc = blk[order], codes[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (sb[1:] != sb[:-1]) | (sc[1:] != sc[:-1])
    idx = np.arange(n)
    first = np.maximum.accumulate(np.where(new, idx, 0))
    keep = np.empty(n, dtype=bool)
    keep[order] = (idx - first) < cap
    return keep


def _caller_square_sums(codes: np.ndarray, keep: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """``sum_g K_g^2`` over callers for the windows ``[e - length, e)`` (``K_g`` kept events of ``g``)."""
    return _caller_square_sums_multi(codes, keep, ends, (length,))[0][:, 0]


def _caller_square_sums_multi(
    codes: np.ndarray,
    keep: np.ndarray,
    ends: np.ndarray,
    lengths: Sequence[int],
    sub: np.ndarray | None = None,
    sub_min_length: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``sum_g K_g^2`` for the windows ``[e - L, e)``, every ``e`` in ``ends`` and ``L`` in ``lengths``.

    Returns two ``len(ends) x len(lengths)`` arrays: for the events in ``keep``, and for those in
    ``sub`` (a subset of ``keep``; zeros when ``None`` and for lengths below ``sub_min_length``).
    Callers are ranked once for everything.
    """
    out = np.zeros((len(ends), len(lengths)))
    out_sub = np.zeros((len(ends), len(lengths)))
    kidx = np.flatnonzero(keep)
    if len(kidx) == 0 or len(ends) == 0:
        return out, out_sub
    _, kinv = np.unique(codes[kidx], return_inverse=True)
    g = int(kinv.max()) + 1
    hi = np.searchsorted(kidx, ends)
    ksub = sub[kidx].astype(np.float64) if sub is not None else None
    for w, length in enumerate(lengths):
        lo = np.searchsorted(kidx, np.maximum(ends - length, 0))
        lens = hi - lo
        tot = int(lens.sum())
        win = np.repeat(np.arange(len(ends)), lens)
        pos = np.arange(tot) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
        cell = win * g + kinv[pos]
        cnt = np.bincount(cell, minlength=len(ends) * g)
        out[:, w] = (cnt.astype(np.float64) ** 2).reshape(len(ends), g).sum(1)
        if ksub is not None and length >= sub_min_length:
            cs = np.bincount(cell, weights=ksub[pos], minlength=len(ends) * g)
            out_sub[:, w] = (cs**2).reshape(len(ends), g).sum(1)
    return out, out_sub


def _chi2_to_z(q: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """|z| with the same two-sided tail as ``q`` under chi-square(``dof``) (capped at 38)."""
    p = chdtrc(dof, np.maximum(q, 0.0))
    z = -ndtri(np.maximum(p, 1e-300) / 2.0)
    # beyond double precision the tail is astronomically small: keep ordering with Wilson-Hilferty
    wh = ((np.maximum(q, 0.0) / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / np.sqrt(2 / (9 * dof))
    return np.asarray(np.where(p > 1e-290, z, np.minimum(np.maximum(wh, z), 38.0)))


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
        tails, between-time variance; bins, projections, whitening and threshold stay), so the
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
    state_version: ClassVar[int] = 7

    def __init__(
        self,
        context: DetectorContext,
        *,
        reference_size: int = 2000,
        reference: Mapping[str, Any] | None = None,
        block_size: int = 50,
        window_sizes: Sequence[int] = (100, 200, 400, 1000),
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
        cov_dims: int = 16,
        cov_caller_blocks: int = 8,
        cov_min_events: float = 2.0,
        anonymous_run: int = 50,
        spread_score: str = "normal",
        max_class_channels: int = 10,
        temporal_block: int | None = None,
        max_reference_size: int = 20_000,
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
            cov_dims=cov_dims,
            cov_caller_blocks=cov_caller_blocks,
            cov_min_events=cov_min_events,
            anonymous_run=anonymous_run,
            spread_score=spread_score,
            max_class_channels=max_class_channels,
            temporal_block=temporal_block,
            max_reference_size=max_reference_size,
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
        if not 0 <= int(cov_dims) <= 128:
            raise ValueError(f"cov_dims must be in [0, 128], got {cov_dims}")
        if not 1 <= int(cov_caller_blocks) or (int(cov_caller_blocks) - 1) * int(block_size) > max(window_sizes):
            raise ValueError(
                f"cov_caller_blocks must be >= 1 with (cov_caller_blocks - 1) * block_size <= max(window_sizes), "
                f"got {cov_caller_blocks}"
            )
        if float(cov_min_events) < 0.0:
            raise ValueError(f"cov_min_events must be >= 0, got {cov_min_events}")
        if int(anonymous_run) < 1:
            raise ValueError(f"anonymous_run must be >= 1, got {anonymous_run}")
        if spread_score not in ("normal", "rank"):
            raise ValueError(f"spread_score must be 'normal' or 'rank', got {spread_score!r}")
        if int(max_class_channels) < 0:
            raise ValueError(f"max_class_channels must be >= 0, got {max_class_channels}")
        if temporal_block is not None and (int(temporal_block) < 0 or int(temporal_block) % int(block_size)):
            raise ValueError(f"temporal_block must be None, 0 or a positive multiple of block_size, got {temporal_block}")
        if int(max_reference_size) < 0:
            raise ValueError(f"max_reference_size must be >= 0, got {max_reference_size}")
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
        self.block_cap = max(1, int(round(self.caller_cap * self.block_size)))
        self.min_effective_callers = float(min_effective_callers)
        self.min_caller_correlation = float(min_caller_correlation)
        self.quiet_windows = int(quiet_windows)
        self.calibration_events = int(calibration_events)
        self.top_k = int(top_k)
        self.cov_dims = int(cov_dims)
        self.cov_caller_blocks = int(cov_caller_blocks)
        self.cov_clip_quantile = 0.9
        self.cov_min_events = float(cov_min_events)
        self.cov_step = self.cov_caller_blocks * self.block_size
        # caller history kept between chunks: the largest window plus enough to know, for every
        # event a window can reach, whether its caller already appeared in its covariance super-block
        self.hist_len = max(self.window_sizes) + self.cov_step - self.block_size
        self.anonymous_run = int(anonymous_run)
        self.spread_score = str(spread_score)
        self.max_class_channels = int(max_class_channels)
        self.temporal_block = max(self.window_sizes) if temporal_block is None else int(temporal_block)
        self.max_reference_size = int(max_reference_size)
        self.budget = float(context.events_between_false_alarms)
        self.n_bins_total = max(self.n_bins, self.max_categories + 1) + 1
        self.missing_bin = self.n_bins_total - 1
        self._reset()
        if reference is not None:
            self._fit_from_mapping(reference)

    # ------------------------------------------------------------------ state containers
    def _reset(self) -> None:
        self.fitted = False
        self.ref_buf: dict[str, list[Any]] = {k: [] for k in ("X", "C", "pred", "pval", "out", "prob", "cid", "ts")}
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
        self.blocks = np.empty((0, 0, self.n_bins_total), dtype=np.int64)
        self.block_cs = np.empty((0, 0), dtype=np.float64)
        self.block_sw = np.empty(0, dtype=np.int64)
        self.block_pp = np.empty((0, 0), dtype=np.float64)
        self.episodes = EpisodeTracker(Kind.DRIFT, self.name, self.config_hash, float("nan"), self.quiet_windows)
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
            [np.asarray(ref.get(k, np.full(n, np.nan)), dtype=np.float64) for k in _OUTPUTS]
        )
        cids = list(ref.get("client_ids", [None] * n))
        ts = np.asarray(ref.get("ts", np.arange(n, dtype=np.float64)), dtype=np.float64)
        codes, _ = _caller_codes(cids, {}, 0, 0)
        pval = (
            np.array([_to_float(p) for p in pred], dtype=np.float64) if pred is not None else np.full(n, np.nan)
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
        n, d = X.shape
        kept = _keep_mask(codes, self.block_size, self.block_cap)
        w = kept.astype(np.float64)
        sw = float(w.sum())
        vcodes = _variance_codes(codes, self.anonymous_run)
        a_ref = float(_caller_square_sums(vcodes, kept, np.array([n]), n)[0])
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
            model.update(pca_med=med, pca_scale=scale, pca_isd=1.0 / np.sqrt(evals[idx]), pca_basis=evecs[:, idx].copy())
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
        model["prob_cols"], model["prob_classes"] = self._select_classes(probs, w)

        names: list[str] = [f"feature:{nm}" for nm in self._numeric_names(d)]
        names += [f"output:{o}" for o, h in zip(_OUTPUTS, has_out, strict=True) if h]
        names += [f"output:P({c})" for c in model["prob_classes"]]
        if pred_numeric:
            names.append("output:prediction")
        names += [f"multivariate:pc{j}" for j in range(ncomp)]
        if ncomp:
            names += ["multivariate:norm", "multivariate:residual"]
        n_num = len(names)
        model["n_num"] = n_num
        Zn = self._numeric_matrix(X, outs, pval, model, probs)

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
        model["prob_chan0"] = names.index(f"output:P({model['prob_classes'][0]})") if model["prob_classes"] else -1

        # categorical channels: string features, then the predicted class
        cat_maps: list[dict[str, int]] = []
        cat_labels: list[list[str]] = []
        cat_cols: list[list[Any]] = [list(C[:, j]) for j in range(C.shape[1])]
        cat_names = [f"categorical:{nm}" for nm in self._categorical_names(C.shape[1])]
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
                (c for c in freq if freq[c] / total >= self.min_category_freq), key=lambda c: (-freq[c], c)
            )[: self.max_categories]
            cat_maps.append({c: i for i, c in enumerate(keep)})
            cat_labels.append(keep)
        model.update(cat_maps=cat_maps, cat_labels=cat_labels)
        names += cat_names
        model["names"] = names

        bins = self._bins(Zn, C, pred, model)
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
            if 0 <= c - model["prob_chan0"] < npc:
                loc = np.append(binmean[c - model["prob_chan0"]], np.zeros(nb - 1 - q + 1))[:nb]
            if self.spread_score == "normal":  # Klotz-type: squared normal score of the mid-rank
                spr = np.append(ndtri(np.clip(u, 1e-4, 1 - 1e-4)) ** 2, 0.0)
            else:  # Ansari-Bradley-type
                spr = np.append(np.abs(2 * u - 1), 0.0)
            for tab, lab in ((loc, "location"), (spr, "spread")):
                mu_obs = float((tab[: nb - 1] * cnt[: nb - 1]).sum() / max(p_obs, 1e-12))
                tab = tab.copy()
                tab[nb - 1] = mu_obs  # a missing value is neutral for location and spread
                tables.append(tab)
                chans.append(c)
                kinds.append(_LINEAR)
                labels.append(lab)
            if c < d or (names[c].startswith("output:") and not names[c].startswith("output:P(")):
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
        # scores on a 2^-20 grid: sums of up to 2^30 of them are exact in float64, so per-block
        # score sums can be accumulated across blocks without any dependence on batch cuts
        tab = np.round(np.array(tables) * _GRID) / _GRID
        chan = np.array(chans, dtype=np.int64)
        kind = np.array(kinds, dtype=np.int64)

        # reference moments of the kept events; between-caller variance by ANOVA moments
        S = tab[np.arange(len(chan))[None, :], bins[:, chan]]
        mu = (w[:, None] * S).sum(0) / sw
        floor_p = 0.5 / n
        ind = kind == _INDICATOR
        mu = np.where(ind, np.clip(mu, floor_p, 1 - floor_p), mu)
        var = (w[:, None] * (S - mu) ** 2).sum(0) / sw
        var = np.where(ind, mu * (1 - mu), np.maximum(var, 0.25 / n))
        tau2 = self._between_caller_variance(S[kept], vcodes[kept], var)
        tau2 = np.clip(tau2, self.min_caller_correlation * var, var)
        sig_w = np.maximum(var - tau2, 0.0)
        vref = (tau2 * a_ref + sig_w * sw) / sw**2
        # between-time variance (time-of-day mix, sessions): added to every live window's variance
        taut, model["temporal"], time_blocks = self._between_time_variance(S, kept, vcodes, tau2, sig_w)
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
        self._fit_tilt(ref_counts, model)
        self._fit_tests(S[kept], model, d)
        self._fit_covariance(bins, codes, vcodes, model, d)
        self.model = model

        # calibration on a caller-resampled null stream
        self.threshold, self.calibration = self._calibrate(bins, codes)
        model["group_gc_sim"] = model["group_gc"].copy()
        model["group_gc_time"] = self._temporal_gc(*time_blocks) if time_blocks is not None else np.ones_like(
            model["group_gc"]
        )
        model["group_gc"] = model["group_gc_sim"] * model["group_gc_time"]
        self.calibration["temporal"] = dict(model["temporal"])
        self.calibration["temporal"]["joint_inflation"] = {
            nm: round(float(v), 4) for nm, v in zip(model["group_names"], model["group_gc_time"], strict=True) if v > 1
        }
        self.episodes.threshold = float(self.threshold)
        self.fitted = True
        self._start_monitoring()
        self.growth = None
        if source.startswith("first") and self.max_reference_size > n:
            self.growth = self._new_growth(S, kept, vcodes, n)

    def _new_growth(self, S: np.ndarray, kept: np.ndarray, vcodes: np.ndarray, n: int) -> ReferenceGrowth:
        """Growth books for a first-events reference, holding its callers and complete time blocks."""
        step = self.block_size
        codes, cnt = np.unique(vcodes[kept], return_counts=True)
        B = self.temporal_block
        g = ReferenceGrowth(
            n_chan=len(self.model["names"]),
            n_bins=self.n_bins_total,
            n_cols=S.shape[1],
            events=n,
            max_events=self.max_reference_size,
            block_size=step,
            time_blocks=B // step if B > 0 else 0,
            callers=dict(zip(codes.tolist(), cnt.tolist(), strict=True)),
        )
        if B > 0 and n // B:
            sums, n_b, a_b = self._time_block_stats(S, kept, vcodes, B)
            g.time_sums, g.time_kept, g.time_a = list(sums), n_b.tolist(), a_b.tolist()
        return g

    def _fit_tilt(self, counts: np.ndarray, model: dict[str, Any]) -> None:
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
            if lab not in ("location", "spread") or model["kind"][k] != _LINEAR:
                continue
            cnt = counts[chan[k]]
            lo_k, hi_k, g = tilt_root_table(tab[k], cnt, _TILT_GRID)
            if hi_k <= lo_k:
                continue
            # a column whose tilt root is nowhere less extreme than Wald (by more than 1%) keeps
            # Wald: no table (the mid-rank location score of a continuous channel is ~uniform:
            # lighter tails; a grown reference makes it only nearly uniform)
            p = cnt / cnt.sum()
            sd = float(np.sqrt((p * (tab[k] - (p * tab[k]).sum()) ** 2).sum()))
            wald = (np.linspace(lo_k, hi_k, _TILT_GRID) - model["mu"][k]) / max(sd, 1e-12)
            if np.all(np.abs(g) >= np.abs(wald) * 0.99):
                continue
            cols.append(k)
            los.append(lo_k)
            invs.append((_TILT_GRID - 1) / (hi_k - lo_k))
            grids.append(g)
        model.update(
            tilt_cols=np.array(cols, dtype=np.int64),
            tilt_lo=np.array(los),
            tilt_inv=np.array(invs),
            tilt_grid=np.array(grids).reshape(len(cols), _TILT_GRID),
        )

    def _tilt_z(self, mean: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Tilt-root scores of the ``tilt_cols`` columns: ``sqrt(var / v) R(mean)`` (k x columns)."""
        m = self.model
        cols = m["tilt_cols"]
        pos = np.clip((mean - m["tilt_lo"]) * m["tilt_inv"], 0.0, _TILT_GRID - 1.0)
        i = np.minimum(pos.astype(np.int64), _TILT_GRID - 2)
        f = pos - i
        i += (np.arange(len(cols)) * _TILT_GRID)[None, :]
        g = m["tilt_grid"].ravel()
        r = g[i] * (1.0 - f) + g[i + 1] * f
        return np.asarray(np.sqrt((m["tau2"][cols] + m["sigw"][cols]) / v) * r)

    def _n_pp(self) -> int:
        """Columns of the per-block covariance sums: the distinct products and their event count."""
        npp = len(self.model.get("cov_mu", ()))
        return npp + 1 if npp else 0

    def _start_monitoring(self) -> None:
        nch = len(self.model["names"])
        self.pend_bins = np.empty((0, nch), dtype=np.uint8)
        self.blocks = np.zeros((0, nch, self.n_bins_total), dtype=np.int64)
        self.block_cs = np.zeros((0, len(self.model["chan"])), dtype=np.float64)
        self.block_sw = np.zeros(0, dtype=np.int64)
        self.block_pp = np.zeros((0, self._n_pp()), dtype=np.float64)

    def _fit_tests(self, S: np.ndarray, model: dict[str, Any], d: int) -> None:
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

    def _fit_covariance(
        self, bins: np.ndarray, codes: np.ndarray, vcodes: np.ndarray, model: dict[str, Any], d: int
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
        if d < 2 or self.cov_dims == 0:
            return
        nb = self.n_bins_total
        kept = _keep_mask(codes, self.cov_step, 1)
        a_ref = float(_caller_square_sums(vcodes, kept, np.array([len(codes)]), len(codes))[0])
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
        order = order[evals[order] > 1e-3 * float(evals.max())][: self.cov_dims]
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
        y2 = (self._whitened(bins[kept], model) ** 2).sum(1)
        model["cov_c2"] = float(np.ceil(np.quantile(y2, self.cov_clip_quantile)))
        Y = self._whitened(bins, model)
        P = Y[:, iu[0]] * Y[:, iu[1]]
        mu = (w[:, None] * P).sum(0) / sw
        var = np.maximum((w[:, None] * (P - mu) ** 2).sum(0) / sw, 1e-6)
        # one between-caller share for the whole test (the median of the products' ANOVA shares):
        # then each product's window variance is var_k * c(window) and the statistic is a plain
        # sum of squares of pre-scaled products, the cheap form needed at 2,000 products
        share = self._between_caller_variance(P[kept], vcodes[kept], var) / var
        rho = float(np.clip(np.median(share), self.min_caller_correlation, 1.0))
        c_ref = (rho * a_ref + (1.0 - rho) * sw) / sw**2
        isd = 1.0 / np.sqrt(var)
        model.update(cov_mu=mu * isd, cov_isd=isd, cov_rho=rho, cov_cref=c_ref)
        model["group_names"] = [*model["group_names"], "inputs:covariance"]
        model["group_dof"] = np.append(model["group_dof"], float(len(mu)))
        model["group_gc"] = np.append(model["group_gc"], 1.0)

    @staticmethod
    def _whitened(bins: np.ndarray, model: dict[str, Any]) -> np.ndarray:
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

    def _cov_q(self, colsum: np.ndarray, sw: np.ndarray, a: np.ndarray, live: bool) -> np.ndarray:
        """Raw covariance statistics (sum of squared product z-scores) for windows (k x products)."""
        m = self.model
        swc = np.maximum(sw, 1.0)
        rho = m["cov_rho"]
        c = (rho * a + (1.0 - rho) * swc) / swc**2 + (m["cov_cref"] if live else 0.0)
        # exact window sums, scaled only here (so nothing depends on how blocks were accumulated)
        dev = colsum * m["cov_isd"]
        dev *= (1.0 / swc)[:, None]
        dev -= m["cov_mu"]
        return np.asarray(np.einsum("kp,kp->k", dev, dev) / c)

    def _between_time_variance(
        self, S: np.ndarray, kept: np.ndarray, vcodes: np.ndarray, tau2: np.ndarray, sigw: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """Per score column, the variance of the mean between consecutive time blocks of the reference
        beyond what the caller model explains, and the live-window variance it adds (with the time
        blocks' statistics, see :meth:`_time_block_stats`, or ``None`` when there are too few).

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
        step = self.block_size
        info: dict[str, Any] = {"block_events": 0, "blocks": 0, "columns": 0}
        if self.temporal_block <= 0:
            return np.zeros(ncol), info, None
        B = step * max(1, min(self.temporal_block // step, n // (8 * step)))
        nb = n // B
        info.update(block_events=int(B), blocks=int(nb))
        if nb < 4:
            return np.zeros(ncol), info, None
        sums, n_b, a_b = self._time_block_stats(S, kept, vcodes, B)
        if n_b.min() < 2:
            return np.zeros(ncol), info, None
        taut = self._temporal_estimate(sums, n_b, a_b, tau2, sigw)
        info["columns"] = int((taut > 0).sum())
        return taut, info, (sums, n_b, a_b)

    @staticmethod
    def _time_block_stats(
        S: np.ndarray, kept: np.ndarray, vcodes: np.ndarray, B: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score sums, kept counts and ``sum_g K_g^2`` of the kept events in each complete time block
        of ``B`` positions of a reference (score matrix ``S``, in stream order)."""
        nb = len(kept) // B
        ends = B * (1 + np.arange(nb))
        a_b = _caller_square_sums_multi(vcodes, kept, ends, (B,))[0][:, 0]
        kw = kept[: nb * B].reshape(nb, B).astype(np.float64)
        sums = np.einsum("bi,bic->bc", kw, S[: nb * B].reshape(nb, B, S.shape[1]))
        return sums, kw.sum(1), a_b

    def _temporal_gc(self, sums: np.ndarray, n_b: np.ndarray, a_b: np.ndarray) -> np.ndarray:
        """Per joint test, the factor by which time blocks' joint statistics exceed chi-square.

        The per-column between-time variance only counts where one column's block means vary
        significantly; a time-of-day mix that moves many correlated scores a little each (a class
        mix, a site offset) shows only jointly. Each reference time block's standardised deviation
        from the reference mean (caller model plus the per-column component) is whitened like a
        live window, and if the groups' block statistics sum beyond the chi-square((nb - 1) dof)
        quantile at 0.01, their ratio to it deflates that joint test (genomic control from time
        blocks; 1 otherwise and for the covariance test).
        """
        m = self.model
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

    @staticmethod
    def _temporal_estimate(
        sums: np.ndarray, n_b: np.ndarray, a_b: np.ndarray, tau2: np.ndarray, sigw: np.ndarray
    ) -> np.ndarray:
        """The between-time variance ``t (1 + 1 / nb)`` from time blocks' score sums, kept counts
        and ``sum_g K_g^2`` (see :meth:`_between_time_variance`)."""
        nb, ncol = sums.shape
        m_b = sums / n_b[:, None]
        e_b = (tau2[None, :] * a_b[:, None] + sigw[None, :] * n_b[:, None]) / n_b[:, None] ** 2
        dev = ((m_b - m_b.mean(0)) ** 2).sum(0) / (nb - 1)
        e_mean = np.maximum(e_b.mean(0), 1e-300)
        p = chdtrc(nb - 1, (nb - 1) * dev / e_mean)
        sig = p < 0.01 / ncol
        return np.asarray(np.where(sig, np.maximum(dev - e_mean, 0.0), 0.0) * (1.0 + 1.0 / nb))

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

    def _select_classes(self, probs: np.ndarray | None, w: np.ndarray) -> tuple[list[int], list[str]]:
        """Probability columns monitored as channels: the most probable classes of the reference.

        Classes given (finite) in most kept reference events, ranked by mean probability (ties by
        name), at most ``max_class_channels``. When all classes but one fit, the most probable class
        is left out: its probability is one minus the others' (a binary model keeps only its rarer
        class), and a collinear column would only cost the joint test a degree of freedom.
        """
        if probs is None or probs.ndim != 2 or probs.shape[1] == 0 or self.max_class_channels == 0:
            return [], []
        classes = self.classes or tuple(str(i) for i in range(probs.shape[1]))
        kept = w > 0
        P = probs[kept]
        fin = np.isfinite(P)
        ok = [j for j in range(P.shape[1]) if fin[:, j].mean() > 0.5]
        if len(ok) < 2:
            return [], []
        mean = {j: float(P[fin[:, j], j].mean()) for j in ok}
        order = sorted(ok, key=lambda j: (-mean[j], classes[j]))
        if len(order) - 1 <= self.max_class_channels:
            order = order[1:]  # the most probable class is one minus the others: no information
        order = order[: self.max_class_channels]
        return order, [classes[j] for j in order]

    def _numeric_matrix(
        self, X: np.ndarray, outs: np.ndarray, pval: np.ndarray, model: dict[str, Any], probs: np.ndarray | None = None
    ) -> np.ndarray:
        parts = [X]
        has_out = model["has_out"]
        if any(has_out):
            parts.append(outs[:, [j for j in range(3) if has_out[j]]])
        pc = model.get("prob_cols", [])
        if len(pc):
            if probs is None or probs.shape[1] <= max(pc):
                parts.append(np.full((len(X), len(pc)), np.nan))
            else:
                parts.append(probs[:, pc])
        if model["pred_kind"] == "numeric":
            parts.append(pval[:, None])
        if model["ncomp"]:
            Z = self._robust_scale(X, model["pca_med"], model["pca_scale"])
            # einsum's own loops keep every row's rounding independent of the batch size (BLAS
            # blocking does not), so bins and findings do not depend on where batches were cut
            B = np.einsum("ij,jk->ik", Z, model["pca_basis"])
            Y = B * model["pca_isd"]
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
        ge = np.empty((n, nn), dtype=bool)
        for e_k in np.ascontiguousarray(edges.T):
            np.greater_equal(Zn, e_k, out=ge)
            np.add(b, ge.view(np.uint8), out=b)  # no temporaries, no bool -> uint8 cast loop
        b[np.isnan(Zn)] = self.missing_bin
        out[:, :nn] = b
        n_num = model["n_num"]
        cols: list[list[Any]] = [list(C[:, j]) for j in range(C.shape[1])]
        if model["pred_kind"] == "categorical":
            cols.append(pred if pred is not None else [None] * n)
        for j, (col, cmap) in enumerate(zip(cols, model["cat_maps"], strict=True)):
            other = len(cmap)
            mb = self.missing_bin
            lut = {v: (mb if v is None else cmap.get(str(v), other)) for v in set(col)}
            out[:, n_num + j] = np.fromiter(map(lut.__getitem__, col), dtype=np.uint8, count=n)
        return out

    # ------------------------------------------------------------------ window statistics
    def _window_z(self, colsum: np.ndarray, sw: np.ndarray, a: np.ndarray, live: bool) -> tuple[np.ndarray, np.ndarray]:
        """Scores of all columns for ``k`` windows (``colsum``: k x columns, score sums of kept events).

        Returns ``(z, zw)``: ``zw`` are Wald scores ``(mean - mu) / sd`` (used by the joint tests);
        ``z`` replaces the indicator columns' Wald scores by the signed-root binomial LR (accurate
        tails for rare categories and missing rates; used by the single tests).
        """
        m = self.model
        swc = np.maximum(sw, 1.0)[:, None]
        mean = colsum / swc
        v = (m["tau2"] * a[:, None] + m["sigw"] * swc) / swc**2
        if live:
            v = v + m["vref"]
        zw = (mean - m["mu"]) / np.sqrt(v)
        tc = m["tilt_cols"]
        if len(tc):  # never beyond the tilt root (skewed scores' tails); the joint tests use it too
            zt = self._tilt_z(mean[:, tc], v[:, tc])
            zw[:, tc] = np.where(np.abs(zt) < np.abs(zw[:, tc]), zt, zw[:, tc])
        z = zw.copy()
        ind = m["kind"] == _INDICATOR
        if ind.any():
            p = m["mu"][ind]
            z[:, ind] = signed_root_binomial(mean[:, ind], p, p * (1 - p) / v[:, ind])
        return z, zw

    def _joint_q(self, zw: np.ndarray) -> np.ndarray:
        """Raw joint statistics ``|W_g z_g|^2`` (k x groups)."""
        m = self.model
        q = np.zeros((zw.shape[0], len(m["group_names"])))
        for g, (cols, W) in enumerate(zip(m["group_cols"], m["group_maps"], strict=True)):  # linear groups first
            y = np.einsum("kc,rc->kr", zw[:, cols], W)
            q[:, g] = (y**2).sum(1)
        return q

    def _joint_z(self, q: np.ndarray) -> np.ndarray:
        m = self.model
        if q.shape[-1] == 0:
            return q
        return _chi2_to_z(q / m["group_gc"], m["group_dof"])

    def _scan_chunk(
        self,
        bins_c: np.ndarray,
        codes_c: np.ndarray,
        state: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray],
        live: bool,
        keep_details: bool,
    ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]]:
        """Evaluate the closes of whole blocks ``bins_c`` (a multiple of ``block_size`` events).

        ``state`` is ``(blocks, block_sums, block_kept, hist_codes, hist_keep, n_blocks, block_pp)``:
        kept-event bin counts, score sums and kept counts of the last blocks, caller codes and keep
        flags of the last ``hist_len`` events, the number of blocks before, and the last blocks'
        sums of whitened products with, as last column, their count (covariance test, which keeps
        one event per caller per super-block of ``cov_step`` events). Everything is vectorised over
        closes and window sizes.
        """
        step = self.block_size
        m = self.model
        blocks, block_cs, block_sw, h_codes, h_keep, n_blocks, block_pp = state
        nch, nb = len(m["names"]), self.n_bins_total
        n = len(codes_c)
        J = n // step
        W = len(self.window_sizes)
        keep_c = _keep_mask(codes_c, step, self.block_cap)
        kidx = np.flatnonzero(keep_c)
        flat = (kidx // step)[:, None] * (nch * nb) + np.arange(nch, dtype=np.int64)[None, :] * nb + bins_c[kidx]
        new_blocks = np.bincount(flat.ravel(), minlength=J * nch * nb).reshape(J, nch, nb)
        # per-block score sums (exact: integer counts times grid scores), then window sums
        new_cs = np.einsum("jcb,cb->jc", new_blocks[:, m["chan"], :].astype(np.float64), m["tab"])
        allb = np.concatenate([blocks, new_blocks]) if len(blocks) else new_blocks
        allcs = np.concatenate([block_cs, new_cs]) if len(block_cs) else new_cs
        allsw = np.concatenate([block_sw, new_blocks[:, 0, :].sum(1)])
        nb0 = len(blocks)
        cum = _cumrows(allcs)
        cum_sw = np.concatenate([[0], np.cumsum(allsw)])
        nh = len(h_codes)
        span_codes = np.concatenate([h_codes, codes_c])
        span_keep = np.concatenate([h_keep, keep_c])
        span_vcodes = _variance_codes(span_codes, self.anonymous_run)
        r = int(m.get("cov_r", 0))
        if r:
            # super-blocks are aligned to monitored positions; the history reaches back far enough
            # that every event a window can contain sees the start of its super-block
            span_keep_cov = _keep_mask(span_codes, self.cov_step, 1, offset=n_blocks * step - nh)
            keep_cov = span_keep_cov[nh:]
            # only the events the test keeps (about a quarter) are Gaussianised and whitened
            # and only they enter the per-block sums of outer products: one batched GEMM over
            # blocks, each block's kept rows packed to the front (zero rows add exact zeros)
            kc = np.flatnonzero(keep_cov)
            kcnt = keep_cov.reshape(J, step).sum(1)
            width = max(int(kcnt.max()), 1)
            Yb = np.zeros((J, width, r))
            kb = kc // step
            Yb[kb, np.arange(len(kc)) - (np.cumsum(kcnt) - kcnt)[kb]] = self._whitened(bins_c[kc], m)
            iu = m["cov_iu"]
            new_pp = np.empty((J, iu.shape[1] + 1))
            np.take(np.matmul(Yb.transpose(0, 2, 1), Yb).reshape(J, r * r), iu[0] * r + iu[1], axis=1, out=new_pp[:, :-1])
            new_pp[:, -1] = kcnt
            allpp = np.concatenate([block_pp, new_pp]) if len(block_pp) else new_pp
            cum_pp = _cumrows(allpp)
        else:
            allpp = np.zeros((len(allsw), 0))
        ends = nh + step * (1 + np.arange(J))
        cj = nb0 + 1 + np.arange(J)
        n_here = (n_blocks + 1 + np.arange(J)) * step
        colsum = np.empty((J, W, allcs.shape[1]))
        sw = np.empty((J, W))
        valid = np.empty((J, W), dtype=bool)
        # kept-event counts of the covariance test per window (its product sums are formed below,
        # only for the windows it tests)
        ppcnt = np.zeros((J, W))
        pplo = np.zeros((J, W), dtype=np.int64)
        a, a_cov = _caller_square_sums_multi(
            span_vcodes, span_keep, ends, self.window_sizes, span_keep_cov if r else None,
            # a window shorter than the covariance test's minimum count is never tested by it
            sub_min_length=self.cov_min_events * r,
        )
        for w, L in enumerate(self.window_sizes):
            lo = np.maximum(cj - L // step, 0)
            colsum[:, w] = cum[cj] - cum[lo]
            sw[:, w] = cum_sw[cj] - cum_sw[lo]
            valid[:, w] = n_here >= L
            if r:
                ppcnt[:, w] = cum_pp[cj, -1] - cum_pp[lo, -1]
                pplo[:, w] = lo
        eff = sw**2 / np.maximum(a, 1.0)
        valid &= eff >= self.min_effective_callers
        z, zw = self._window_z(colsum.reshape(J * W, -1), sw.ravel(), a.ravel(), live)
        single = np.abs(z[:, m["tested"]]).max(1).reshape(J, W)
        q = self._joint_q(zw)
        if r:
            # too few kept events for r(r+1)/2 products: the statistic is not tested (reads 0)
            ok = np.flatnonzero(ppcnt.ravel() >= self.cov_min_events * r)
            q[:, -1] = 0.0
            if len(ok):
                pp_ok = cum_pp[np.repeat(cj, W)[ok]] - cum_pp[pplo.ravel()[ok]]
                q[ok, -1] = self._cov_q(pp_ok[:, :-1], pp_ok[:, -1], a_cov.ravel()[ok], live)
        q = q.reshape(J, W, -1)
        res: dict[str, Any] = {
            "single": single, "q": q, "valid": valid, "n_here": n_here, "ends": ends, "eff": eff, "sw": sw,
            "span_keep": span_keep,
        }
        if keep_details:
            res.update(z=z.reshape(J, W, -1), allb=allb, cj=cj)
            if r:  # product sums of one window are formed only when a finding explains it
                res.update(cum_pp=cum_pp, pplo=pplo)
        big = max(self.window_sizes)
        max_blocks = big // step
        new_state = (
            allb[-max_blocks:].copy(),
            allcs[-max_blocks:].copy(),
            allsw[-max_blocks:].copy(),
            span_codes[-self.hist_len :].copy(),
            span_keep[-self.hist_len :].copy(),
            n_blocks + J,
            allpp[-max_blocks:].copy(),
        )
        return res, new_state

    def _statistic(self, res: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per window: combined statistic (0 where untested) and joint |z|; per close: best window."""
        zeq = self._joint_z(res["q"])
        per_w = res["single"] if zeq.shape[-1] == 0 else np.maximum(res["single"], zeq.max(-1))
        per_w = np.where(res["valid"], per_w, 0.0)
        return per_w, zeq, np.argmax(per_w, axis=1)

    def _calibrate(self, bins: np.ndarray, codes: np.ndarray) -> tuple[float, dict[str, Any]]:
        rng = np.random.default_rng(self.context.seed)
        n = len(codes)
        n_sim = self.calibration_events
        if n_sim < 30 * self.budget <= 400_000:
            n_sim = int(30 * self.budget)
        # runs of consecutive events of one caller; anonymous events in runs of ``anonymous_run``
        # positions (their pseudo-callers), so serial dependence among them is resampled too
        vcodes = _variance_codes(codes, self.anonymous_run)
        brk = np.flatnonzero(vcodes[1:] != vcodes[:-1]) + 1
        starts = np.concatenate([[0], brk])
        ends = np.concatenate([brk, [n]])
        lens = ends - starts
        n_draw = int(n_sim / lens.mean() * 1.2) + 10
        pick = rng.integers(0, len(starts), size=n_draw)
        tot = np.cumsum(lens[pick])
        pick = pick[: int(np.searchsorted(tot, n_sim)) + 1]
        idx = np.concatenate([np.arange(starts[p], ends[p]) for p in pick])[:n_sim]
        step = self.block_size
        idx = idx[: (len(idx) // step) * step]
        sim_codes = codes[idx].copy()
        anon = sim_codes < 0
        sim_codes[anon] = -(np.flatnonzero(anon) + 1)
        sim_bins = bins[idx]
        nch = bins.shape[1]
        state = (
            np.zeros((0, nch, self.n_bins_total), np.int64),
            np.zeros((0, len(self.model["chan"]))),
            np.zeros(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, bool),
            0,
            np.zeros((0, self._n_pp())),
        )
        parts: list[dict[str, Any]] = []
        chunk = _CHUNK_BLOCKS * step
        for c0 in range(0, len(idx), chunk):
            res, state = self._scan_chunk(sim_bins[c0 : c0 + chunk], sim_codes[c0 : c0 + chunk], state, False, False)
            parts.append(res)
        res = {k: np.concatenate([p[k] for p in parts]) for k in ("single", "q", "valid")}
        # genomic control: deflate a joint test whose simulated null median exceeds chi-square's
        m = self.model
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
                # independent on non-Gaussian data)
                mean, var = float(qv.mean()), float(qv.var())
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
        per_w, _, _ = self._statistic(res)
        stat = per_w.max(1)
        n_tests = int(m["tested"].sum()) + len(m["group_names"])
        tests_per_event = n_tests * len(self.window_sizes) / step
        h, info = calibrate_threshold(stat, len(idx), self.budget, self.quiet_windows, tests_per_event)
        info["seed"] = int(self.context.seed)
        info["single_tests"] = int(m["tested"].sum())
        info["joint_tests"] = {nm: {"dof": round(float(d), 2), "genomic_control": round(float(c), 4)}
                               for nm, d, c in zip(m["group_names"], m["group_dof"], gc, strict=True)}
        return h, info


    def process(self, batch: EventBatch) -> DetectorOutput:
        n = len(batch)
        if n == 0:
            return EMPTY_OUTPUT
        outs = np.column_stack([batch.confidence, batch.margin, batch.entropy])
        codes, self.next_code = _caller_codes(batch.client_ids, self.cmap, self.n_seen, self.next_code)
        probs = self._aligned_probabilities(batch)
        start = 0
        if not self.fitted:
            take = min(n, self.reference_size - self.n_buf)
            sl = slice(0, take)
            self.ref_buf["X"].append(batch.X[sl])
            self.ref_buf["C"].append(batch.C[sl])
            self.ref_buf["pred"].extend(batch.prediction[:take])
            self.ref_buf["pval"].append(batch.prediction_value[sl])
            self.ref_buf["out"].append(outs[sl])
            self.ref_buf["prob"].append(probs[sl])
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
                    probs=np.concatenate(rb["prob"]),
                )
                self.ref_buf = {k: [] for k in self.ref_buf}
            if start >= n:
                return EMPTY_OUTPUT
        sl = slice(start, n)
        m = self.model
        Zn = self._numeric_matrix(batch.X[sl], outs[sl], batch.prediction_value[sl], m, probs[sl])
        bins_new = self._bins(Zn, batch.C[sl], batch.prediction[start:], m)
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
        step = self.block_size
        npend = len(self.pend_codes)
        bins = np.concatenate([self.pend_bins, bins_new])
        codes = np.concatenate([self.pend_codes, codes_new])
        ts = np.concatenate([self.pend_ts, ts_new])
        n_full = (len(codes) // step) * step
        findings: list[Finding] = []
        stats: list[WindowStat] = []
        # chunks end at absolute multiples of _CHUNK_BLOCKS blocks, where a grown reference takes
        # effect, so the closes each reference judges do not depend on batch cuts
        chunk = _CHUNK_BLOCKS * step
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
        state = (
            self.blocks, self.block_cs, self.block_sw, self.hist_codes, self.hist_keep, self.n_blocks, self.block_pp
        )
        res, new_state = self._scan_chunk(bins_c, codes_c, state, True, True)
        span_ts = np.concatenate([self.hist_ts, ts_c])
        per_w, zeq, best_w = self._statistic(res)
        big = max(self.window_sizes)
        for j in range(len(best_w)):
            w = int(best_w[j])
            best = float(per_w[j, w])
            e = int(res["ends"][j])
            n_here = int(res["n_here"][j])
            close_ts = float(span_ts[e - 1])

            def describe(j: int = j, w: int = w, e: int = e, n_here: int = n_here, best: float = best) -> dict[str, Any]:
                L = self.window_sizes[w]
                info = self._info(res, zeq, j, w)
                info["top_callers"] = self._top_callers(np.concatenate([self.hist_codes, codes_c])[max(e - L, 0) : e])
                return {
                    "trigger": ids[e - nh - 1 + id_off],
                    "window_start": float(span_ts[e - L]) if e - L >= 0 else float("nan"),
                    "explanation": self._explain(res["z"][j, w], info, best, L, n_here),
                }

            finding = self.episodes.observe(best, close_ts, describe)
            if finding is not None:
                findings.append(finding)
            last = len(self.window_sizes) - 1
            if n_here % big == 0 and res["valid"][j, last]:
                info = self._info(res, zeq, j, last)
                stats.extend(
                    self._window_stats(res["z"][j, last], info, n_here // big - 1, float(span_ts[e - big]), close_ts, best)
                )
        if self.growth is not None and self.growth.active:
            self._absorb(res, per_w.max(1), np.concatenate([self.hist_codes, codes_c]), span_ts, len(self.blocks))
        (
            self.blocks, self.block_cs, self.block_sw, self.hist_codes, self.hist_keep, self.n_blocks, self.block_pp
        ) = new_state
        self.hist_ts = span_ts[-self.hist_len :].copy()
        if self.growth is not None and self.n_blocks % _CHUNK_BLOCKS == 0 and self.growth.due():
            self._grow_reference()

    # ------------------------------------------------------------------ reference growth
    def _absorb(
        self, res: dict[str, Any], stats: np.ndarray, span_codes: np.ndarray, span_ts: np.ndarray, nb0: int
    ) -> None:
        """Hand the blocks that no later window can contain to the growth books, if every window that
        contained them stayed below the threshold (``stats``: the chunk's closes' statistics)."""
        g = self.growth
        assert g is not None
        step, m = self.block_size, self.model
        span = max(self.window_sizes) // step
        first_close = int(res["n_here"][0]) // step - 1
        c0 = first_close - len(g.recent_stats)
        quiet = g.quiet_blocks(first_close, stats, float(self.threshold), span)
        if not len(quiet):
            return
        allb = res["allb"]
        first_abs = first_close - nb0  # block number of allb[0]
        vcodes = _variance_codes(span_codes, self.anonymous_run)
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
            g.absorb(b, allb[j], sums, vcodes[sl][keep[sl]], float(span_ts[p0 + step - 1]))

    def _grow_reference(self) -> None:
        """Refit the reference moments from the grown bin counts (bins, projections, whitening and
        threshold stay): means, variances, tails, between-time variance, explanation summaries."""
        g = self.growth
        assert g is not None
        m = self.model
        added, _ = g.take()
        counts = m["ref_counts"] + added
        n = g.events
        sw = float(counts[0].sum())
        tab, chan, kind = m["tab"], m["chan"], m["kind"]
        P = counts[chan] / sw
        mu = (P * tab).sum(1)
        ind = kind == _INDICATOR
        mu = np.where(ind, np.clip(mu, 0.5 / n, 1 - 0.5 / n), mu)
        var = (P * (tab - mu[:, None]) ** 2).sum(1)
        var = np.where(ind, mu * (1 - mu), np.maximum(var, 0.25 / n))
        tau2 = m["rho"] * var
        sig_w = np.maximum(var - tau2, 0.0)
        taut = m["taut"]
        timed = len(g.time_kept) >= 8 and min(g.time_kept) >= 2
        if timed:
            blocks = (np.array(g.time_sums), np.array(g.time_kept), np.array(g.time_a))
            taut = np.maximum(m["taut"], self._temporal_estimate(*blocks, tau2, sig_w))
        vref = (tau2 * g.caller_square_sum() + sig_w * sw) / sw**2 + taut
        q, nb = self.n_bins, self.n_bins_total
        n_num = m["n_num"]
        p_obs = np.maximum(counts[:n_num, : nb - 1].sum(1, keepdims=True), 1e-12)
        m.update(ref_counts=counts, mu=mu, tau2=tau2, sigw=sig_w, taut=taut, vref=vref,
                 ref_p=counts[:n_num, :q] / p_obs)
        # the tail tables (the bulk of a refit's cost: ~0.08 s for 180 columns) follow when the
        # reference has grown fourfold since they were fitted, and at the cap; in between the
        # tables of the smaller reference stay (a column's score never exceeds Wald's either way)
        if n >= 4 * int(m.get("tilt_n", 0)) or not g.active:
            self._fit_tilt(counts, m)
            m["tilt_n"] = int(n)
        if timed:
            m["group_gc_time"] = np.maximum(m["group_gc_time"], self._temporal_gc(*blocks))
            m["group_gc"] = m["group_gc_sim"] * m["group_gc_time"]
            m["temporal"] = {
                "block_events": int(self.temporal_block), "blocks": len(g.time_kept), "columns": int((taut > 0).sum())
            }
            self.calibration["temporal"] = dict(m["temporal"])
            self.calibration["temporal"]["joint_inflation"] = {
                nm: round(float(v), 4) for nm, v in zip(m["group_names"], m["group_gc_time"], strict=True) if v > 1
            }
        med, spread, _ = self._summaries(counts)
        m["ref_loc"], m["ref_spread"] = med, spread
        for i in range(len(m["prob_classes"])):
            m["prob_refmean"][i] = self._prob_mean(counts[m["prob_chan0"] + i], i)
        period: dict[str, Any] = dict(m["ref_period"])
        grown_from = int(period.get("grown_from", period["n"]))
        period.update(end=g.last_ts, n=int(n), grown_from=grown_from)
        period["source"] = f"first {int(n)} events (grown from {grown_from} with blocks no alarm window contained)"
        m["ref_period"] = period

    def _info(self, res: dict[str, Any], zeq: np.ndarray, j: int, w: int) -> dict[str, Any]:
        cj, kb = int(res["cj"][j]), self.window_sizes[w] // self.block_size
        return {
            "effective_callers": float(res["eff"][j, w]),
            "counts": res["allb"][max(cj - kb, 0) : cj].sum(0).astype(np.float64),
            "joint_z": zeq[j, w],
            "joint_q": res["q"][j, w],
            "single": float(res["single"][j, w]),
            "cov_mean": (
                (res["cum_pp"][cj, :-1] - res["cum_pp"][res["pplo"][j, w], :-1])
                / max(float(res["cum_pp"][cj, -1] - res["cum_pp"][res["pplo"][j, w], -1]), 1.0)
                if "cum_pp" in res and self.model.get("cov_r") else None
            ),
        }

    def _top_callers(self, codes: np.ndarray, k: int = 3) -> list[dict[str, Any]]:
        """The callers with the largest share of a window's events (all events, kept or not).

        Computed only when a finding is raised: a drift that is one caller's own traffic (an
        attacker, a batch job) should say so. Anonymous events are not grouped.
        """
        named = codes[codes >= 0]
        if len(codes) == 0 or len(named) == 0:
            return []
        uniq, cnt = np.unique(named, return_counts=True)
        # candidates: every caller tied with the k-th largest count; ties broken by name (codes
        # depend on when the caller table was pruned, names do not)
        cut = np.sort(cnt)[::-1][min(k, len(cnt)) - 1]
        cand = np.flatnonzero(cnt >= cut)
        wanted = {int(uniq[i]) for i in cand}
        rev = {v: c for c, v in self.cmap.items() if v in wanted}
        rows = sorted((-int(cnt[i]), rev.get(int(uniq[i]), f"#{int(uniq[i])}")) for i in cand)[:k]
        return [{"client_id": name, "events": -neg, "share": round(-neg / len(codes), 4)} for neg, name in rows]

    def _prune_callers(self) -> None:
        live = set(int(c) for c in np.concatenate([self.hist_codes, self.pend_codes]) if c >= 0)
        self.cmap = {k: v for k, v in self.cmap.items() if v in live}

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
                i_p = c - m.get("prob_chan0", -1)
                if m.get("prob_chan0", -1) >= 0 and 0 <= i_p < len(m["prob_classes"]):
                    entry["reference"]["mean"] = _r(m["prob_refmean"][i_p])
                    entry["current"]["mean"] = _r(self._prob_mean(counts[c], i_p))
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
                entry["total_variation"] = _r(0.5 * sum(abs((cur_f[k] or 0.0) - (ref_f[k] or 0.0)) for k in ref_f))
            top.append(entry)
        joint = []
        for g, gname in enumerate(m["group_names"]):
            joint.append(
                {
                    "test": gname,
                    "z": _r(info["joint_z"][g]),
                    "chi2": _r(info["joint_q"][g] / m["group_gc"][g]),
                    "dof": int(m["group_dof"][g]),
                    "genomic_control": _r(m["group_gc"][g]),
                }
            )
        joint.sort(key=lambda t: -(t["z"] or 0.0))
        pairs = self._covariance_pairs(info.get("cov_mean"))
        trigger = "single"
        if len(joint) and joint[0]["z"] is not None and joint[0]["z"] >= info["single"]:
            trigger = joint[0]["test"]
        else:
            tested = np.where(m["tested"], az, -1.0)
            col = int(np.argmax(tested))
            trigger = f"{names[int(m['chan'][col])]} ({labels[col]})"
        callers = list(info.get("top_callers", []))
        summary = self._summary(trigger, pairs if trigger == "inputs:covariance" else top, stat, L)
        if callers and callers[0]["share"] >= 0.2:
            summary += f"; caller {callers[0]['client_id']} sent {callers[0]['share']:.0%} of the window"
        return {
            "summary": summary,
            "trigger_test": trigger,
            "statistic": round(stat, 4),
            "threshold": round(float(self.threshold), 4),
            "statistic_definition": (
                "max over tests and window sizes of |z|: single tests' standardised scores, joint tests' "
                "chi-square statistics converted to the |z| of equal two-sided tail probability"
            ),
            "joint_tests": joint,
            "window_events": int(L),
            "window_sizes": list(self.window_sizes),
            "block_size": self.block_size,
            "effective_callers": round(float(info.get("effective_callers", 0.0)), 2),
            "top_callers": callers,
            "events_since_reference": int(n_mon_here),
            "top": top,
            "covariance": pairs,
            "reference_period": dict(m["ref_period"]),
            "config_hash": self.config_hash,
            "events_between_false_alarms": self.budget,
            "calibration": dict(self.calibration),
        }

    def _prob_mean(self, counts: np.ndarray, i: int) -> float:
        """Current mean probability of class channel ``i`` from a window's bin counts (reference bin means)."""
        bm = self.model["prob_binmean"][i]
        cnt = counts[: self.n_bins]
        ok = np.isfinite(bm) & (cnt > 0)
        tot = float(cnt[ok].sum())
        return float((cnt[ok] * bm[ok]).sum() / tot) if tot > 0 else float("nan")

    def _covariance_pairs(self, cov_mean: np.ndarray | None) -> list[dict[str, Any]]:
        """Feature pairs whose correlation (of Gaussianised scores) moved most in the window."""
        m = self.model
        if cov_mean is None or not m.get("cov_r"):
            return []
        r = int(m["cov_r"])
        My = np.zeros((r, r))
        iu = m["cov_iu"]
        My[iu[0], iu[1]] = cov_mean
        My[iu[1], iu[0]] = cov_mean
        A = m["cov_a"]
        Mg = A @ My @ A.T

        def corr(M: np.ndarray) -> np.ndarray:
            s = np.sqrt(np.maximum(np.diag(M), 1e-12))
            return np.asarray(M / np.outer(s, s))

        cur, ref = corr(Mg), corr(m["cov_ref"])
        i, j = np.triu_indices(len(cur), 1)
        delta = np.abs(cur[i, j] - ref[i, j])
        feats = self._numeric_names(m["d"])
        out = []
        for k in np.argsort(-delta, kind="stable")[: self.top_k]:
            a, b = int(i[k]), int(j[k])
            out.append(
                {"features": [feats[a], feats[b]], "reference_corr": _r(ref[a, b]), "current_corr": _r(cur[a, b])}
            )
        return out

    def _summary(self, trigger: str, top: list[dict[str, Any]], stat: float, L: int) -> str:
        """One human line: what moved, by how much, window, statistic vs threshold."""
        parts = []
        for e in top[:4]:
            if "features" in e:
                parts.append(
                    f"corr({e['features'][0]}, {e['features'][1]}) {e['reference_corr'] or 0:+.2f} -> "
                    f"{e['current_corr'] or 0:+.2f}"
                )
                continue
            nm = e["stat"].split(":", 1)[1] if ":" in e["stat"] else e["stat"]
            if "mean" in e.get("reference", {}) and e["reference"]["mean"] is not None:
                parts.append(f"{nm} {e['reference']['mean']:.2f} -> {e['current'].get('mean') or 0:.2f}")
            elif "ks_distance" in e:
                ref, cur = e["reference"], e["current"]
                bits = []
                if ref.get("spread") and cur.get("median") is not None and ref.get("median") is not None:
                    bits.append(f"{(cur['median'] - ref['median']) / ref['spread']:+.1f} sd")
                if ref.get("spread") and cur.get("spread") is not None and e["test"] == "spread":
                    bits.append(f"spread x{cur['spread'] / ref['spread']:.2f}")
                if e["test"] == "missing":
                    bits.append(f"missing {ref.get('missing_rate', 0):.1%} -> {cur.get('missing_rate', 0):.1%}")
                bits.append(f"KS {e['ks_distance'] or 0:.2f}")
                parts.append(f"{nm} ({', '.join(bits)})")
            elif "total_variation" in e:
                ref_f, cur_f = e["reference"]["frequencies"], e["current"]["frequencies"]
                k = max(ref_f, key=lambda c: abs((cur_f.get(c) or 0) - (ref_f.get(c) or 0)))
                parts.append(
                    f"{nm} (TV {e['total_variation']:.2f}; {k}: {ref_f[k] or 0:.0%} -> {cur_f.get(k) or 0:.0%})"
                )
            else:
                parts.append(f"{nm} (z {e['z']:+.1f})")
        what = {
            "inputs:location": "input locations (joint test)",
            "inputs:spread": "input spreads (joint test)",
            "outputs:summaries": "confidence/margin/entropy (joint test)",
            "outputs:probabilities": "class probabilities (joint test)",
            "output:prediction:mix": "predicted-class mix (joint test)",
            "inputs:covariance": "input correlations (covariance test)",
        }.get(trigger, trigger)
        return (
            f"drift in {what}: {', '.join(parts)}; window {L} events; "
            f"statistic {stat:.2f} > threshold {float(self.threshold):.2f}"
        )

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
        for g, gname in enumerate(m["group_names"]):
            out.append(WindowStat(self.name, f"joint:{gname}", window, start, end, L, None, None, float(info["joint_z"][g]), h))
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
            "classes": list(self.classes) if self.classes is not None else None,
        }
        if not self.fitted:
            rb = self.ref_buf
            st["ref"] = {
                "X": np.concatenate(rb["X"]) if rb["X"] else np.empty((0, 0)),
                "C": np.concatenate(rb["C"]) if rb["C"] else np.empty((0, 0), object),
                "pred": list(rb["pred"]),
                "pval": np.concatenate(rb["pval"]) if rb["pval"] else np.empty(0),
                "out": np.concatenate(rb["out"]) if rb["out"] else np.empty((0, 3)),
                "prob": np.concatenate(rb["prob"]) if rb["prob"] else np.empty((0, 0)),
                "cid": np.concatenate(rb["cid"]) if rb["cid"] else np.empty(0, np.int64),
                "ts": np.concatenate(rb["ts"]) if rb["ts"] else np.empty(0),
            }
            st["ref"]["C"] = st["ref"]["C"].tolist()
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
        st["blocks"] = self.blocks.copy()
        st["block_cs"] = self.block_cs.copy()
        st["block_sw"] = self.block_sw.copy()
        st["block_pp"] = self.block_pp.copy()
        st["episode"] = self.episodes.state()
        st["growth"] = self.growth.state() if self.growth is not None else None
        return st

    def _set_state(self, state: dict[str, Any]) -> None:
        self._reset()
        self.n_seen = int(state["n_seen"])
        self.n_mon = int(state["n_mon"])
        self.n_buf = int(state["n_buf"])
        self.cmap = {str(k): int(v) for k, v in state["cmap"].items()}
        self.next_code = int(state["next_code"])
        self.classes = tuple(str(c) for c in state["classes"]) if state["classes"] is not None else None
        if not state["fitted"]:
            r = state["ref"]
            if self.n_buf:
                self.ref_buf = {
                    "X": [np.asarray(r["X"], dtype=np.float64)],
                    "C": [np.array(r["C"], dtype=object).reshape(self.n_buf, -1)],
                    "pred": list(r["pred"]),
                    "pval": [np.asarray(r["pval"], dtype=np.float64)],
                    "out": [np.asarray(r["out"], dtype=np.float64)],
                    "prob": [np.asarray(r["prob"], dtype=np.float64).reshape(self.n_buf, -1)],
                    "cid": [np.asarray(r["cid"], dtype=np.int64)],
                    "ts": [np.asarray(r["ts"], dtype=np.float64)],
                }
            return
        mdl = dict(state["model"])
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
        for key in ("pca_med", "pca_scale", "pca_isd", "pca_basis"):
            if key in mdl:
                mdl[key] = np.asarray(mdl[key], dtype=np.float64)
        mdl["tilt_grid"] = mdl["tilt_grid"].reshape(len(mdl["tilt_cols"]), _TILT_GRID)
        mdl["prob_cols"] = [int(c) for c in mdl["prob_cols"]]
        mdl["prob_classes"] = [str(c) for c in mdl["prob_classes"]]
        mdl["prob_chan0"] = int(mdl["prob_chan0"])
        mdl["prob_binmean"] = np.asarray(mdl["prob_binmean"], dtype=np.float64).reshape(
            len(mdl["prob_classes"]), self.n_bins
        )
        mdl["labels"] = list(mdl["labels"])
        mdl["names"] = list(mdl["names"])
        mdl["ref_counts"] = np.asarray(mdl["ref_counts"], dtype=np.float64).reshape(len(mdl["names"]), self.n_bins_total)
        mdl["ref_period"] = dict(mdl["ref_period"])
        mdl["cat_maps"] = [{str(k): int(v) for k, v in cm.items()} for cm in mdl["cat_maps"]]
        self.model = mdl
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
        self.blocks = np.asarray(state["blocks"], dtype=np.int64).reshape(-1, len(mdl["names"]), self.n_bins_total)
        self.block_cs = np.asarray(state["block_cs"], dtype=np.float64).reshape(-1, len(mdl["chan"]))
        self.block_sw = np.asarray(state["block_sw"], dtype=np.int64)
        npp = self._n_pp()
        self.block_pp = np.asarray(state["block_pp"], dtype=np.float64).reshape(len(self.block_sw), npp)
        self.episodes.load(state["episode"])
        self.growth = None
        if state["growth"] is not None:
            self.growth = ReferenceGrowth(
                n_chan=len(mdl["names"]),
                n_bins=self.n_bins_total,
                n_cols=len(mdl["chan"]),
                events=0,
                max_events=self.max_reference_size,
                block_size=self.block_size,
                time_blocks=self.temporal_block // self.block_size if self.temporal_block > 0 else 0,
                callers={},
            )
            self.growth.load(state["growth"])


def _r(x: float) -> float | None:
    v = float(x)
    return None if not np.isfinite(v) else round(v, 6)


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
