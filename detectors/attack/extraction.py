"""Per-caller model-extraction detection.

Method
------
A model thief needs many labelled points that cover the input space, and it rarely has enough
natural inputs: it sends synthetic ones (uniform or Gaussian noise, Jacobian-based augmentation
``x + lambda * sign(grad)`` of a few natural seeds, random perturbations of a seed set).
Per-caller statistics:

* **OOD share** - a robust-PCA model of the first ``reference_events`` events (even events fit,
  odd events held out, as in :mod:`detectors.attack.outlier`) gives every query an
  off-manifold score; a query is out-of-distribution (OOD) above the held-out
  ``ood_quantile`` (so about 1% of natural queries are). The statistic is the number of OOD
  queries among the caller's last ``window`` queries; natural callers almost never reach
  ``ood_threshold`` (binomial tail), noise and augmentation extractors do within a few queries.
* **Derived queries** - a thief that grows a seed set (perturbations, Jacobian steps) queries
  children close to *one of its own earlier queries*: closer than an unrelated natural query
  ever is to its nearest neighbour among ``prada_history`` others. Each query's distance to its
  nearest earlier own query (last ``prada_history``, exact repeats ignored: retries, canaries) is
  compared with the radius at which a natural query's nearest neighbour among ``prada_history``
  unrelated natural queries falls with probability ``derived_quantile`` (0.1%), set from all
  pairs of reference events of *different* callers. The statistic is the number of derived
  queries among the caller's last ``window``; ``derived_threshold`` of them raise the alert.
  Distances are RMS per standardised feature on fingerprints: the standardised input itself
  up to ``FP_DIMS`` (24) features, else a seeded Gaussian projection to 24 dimensions (int8 in
  steps of ``1 / FP_QUANT``).
* **PRADA normality** (Juuti et al., PRADA; off by default, ``prada=True``): for each query the distance to its nearest
  neighbour among the caller's previous ``prada_history`` queries (exact repeats ignored) is
  recorded; natural queries give roughly normally distributed distances, synthetic
  augmentation sequences do not (many tiny steps next to large jumps). Over the caller's last
  ``window`` distances a Shapiro-Francia statistic ``W'`` is computed (squared
  correlation of the sorted distances with expected normal order statistics); ``W' <
  prada_threshold`` is evidence of extraction. Unlike PRADA we test the *logarithm* of the
  distances: a minimum over a bounded history is right-skewed even for natural traffic (raw
  ``W'`` has a median near 0.87 on benign Gaussian data), while log-distances are close to
  normal (0.1% quantile of benign ``W'`` about 0.92 with 48 distances). Its distances are
  taken in an 8-dimensional projection of the fingerprints and the test starts once all
  ``window`` distances come from full histories. Off by default: with the derived-query count it
  caught no attacker first on any benchmark, and its benign ``W'`` sits at the threshold (it
  flagged heavy benign digits callers whenever the fingerprints changed).

The score is ``max(ood_count / ood_threshold, derived_count / derived_threshold[, (1 - W') / (1 -
prada_threshold)])`` and the alert fires at the first query where it reaches 1 (one alert per
caller while its state lives). ``event_ids`` holds the caller's OOD and derived queries (at most
``max_evidence``, trigger included); the explanation gives the statistics, the window and the
reference period.

Memory per caller: ``window + 2 * prada_history * min(d, 24) + 43`` bytes in numpy arrays (843 at 64
features, 587 at 16 by default; PRADA adds ``2 * window - 2``), at
most ``max_callers`` callers with the same TTL/LRU rules as :mod:`detectors.attack.campaign`.
The first ``reference_events`` events are held back until the model is fitted and then scored.
Events without ``client_id`` are not scored.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np
from scipy.stats import norm

from detectors.attack._shift import ShiftMonitor
from detectors.attack.callers import (
    CallerTable,
    Window,
    caller_codes,
    first_occurrences,
    group_first,
    make_layout,
    ring_advance,
    ring_write,
    window_index,
)
from detectors.attack.reference import CappedReference, WarmupBuffer, take_batch
from detectors.attack.scaling import standardise
from detectors.attack.subspace import SubspaceModel
from detectors.base import (
    EMPTY_OUTPUT,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    FlaggedEvent,
    Kind,
    Severity,
    register,
    time_at,
    with_rfc3339,
)
from pipeline.events import EventBatch

#: fingerprints keep the standardised input itself up to this many features, else a random projection to it
FP_DIMS = 24
#: PRADA's distances are taken in a random projection of the fingerprints to this many dimensions
PRADA_DIMS = 8
#: standardised values are clipped to +-FP_CLIP before the fingerprint projection
FP_CLIP = 50.0
#: fingerprints are int8 in steps of 1 / FP_QUANT standardised units (+-15.9 kept; a query with a
#: coordinate beyond that is never a derived query: its distances are not trusted)
FP_QUANT = 8.0
#: the typicality CUSUM is kept in integers (exact, so batch cuts cannot change a decision)
ATYP_UNIT = 1024
_SEG = 2**40
UPDATE_EVERY = 100  # queries between updates of an open extraction alert (as the campaign default)


@functools.lru_cache(maxsize=8)
def _sf_scores(m: int) -> np.ndarray:
    """Centred, unit-norm Blom normal scores for samples of size ``m`` (read-only, cached: the
    window length is fixed, and ``norm.ppf`` cost more than the test itself per batch)."""
    e = norm.ppf((np.arange(1, m + 1) - 0.375) / (m + 0.25))
    e = (e - e.mean()) / np.linalg.norm(e - e.mean())
    e.setflags(write=False)
    return e  # type: ignore[no-any-return]


def shapiro_francia(D: np.ndarray) -> np.ndarray:
    """Shapiro-Francia ``W'`` of each row of ``D`` (rows of equal length, no NaN).

    >>> rng = np.random.default_rng(1)
    >>> w = shapiro_francia(np.vstack([rng.normal(size=64), rng.exponential(size=64) ** 3]))
    >>> bool(w[0] > 0.95 > w[1])
    True
    """
    e = _sf_scores(D.shape[1])
    S = np.sort(D, axis=1)
    Sc = S - S.mean(axis=1, keepdims=True)
    ss = np.einsum("ij,ij->i", Sc, Sc)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = (Sc @ e) ** 2 / ss
    return np.where(ss > 0, w, 1.0)


@register
class ExtractionDetector(Detector):
    """Per-caller model-extraction detector (OOD share, derived queries, optional PRADA test).

    Parameters
    ----------
    context : DetectorContext
        Route, schema and seed.
    reference_events : int, default 2000
        Reference period (first events of the route).
    var_kept, max_components, clip : float, int, float
        Subspace model settings (as for ``outlier``): 0.9, 32, 1000.0.
    ood_quantile : float, default 0.99
        Held-out reference quantile above which a query is OOD.
    window : int, default 32
        Queries per caller over which OOD and derived queries are counted.
    ood_threshold : int, default 10
        OOD queries in the window that raise an alert.
    prada_history : int, default 32
        Previous queries a new query's nearest-neighbour distance is taken over (<= window), for
        the derived-query count and PRADA. The normality test runs on the last ``window``
        distances once all of them come from full histories.
    prada_threshold : float, default 0.5
        ``W'`` below this is extraction evidence.
    prada_every : int, default 4
        The test runs at every ``prada_every``-th query of a caller (saves CPU).
    prada : bool, default False
        Run the PRADA normality test (see the module docstring for why it is off).
    derived_quantile : float, default 0.001
        Probability that a natural query's nearest neighbour among ``prada_history`` unrelated
        natural queries is closer than the derived-query radius.
    derived_threshold : int or None, default 5
        Derived queries among the last ``window`` that raise an alert (None: not used).
    max_evidence : int, default 50
        Cap on the event ids an alert carries.
    max_callers, ttl, suspicious_ttl : int, float, float
        Caller table bounds: 1_000_000, 86400.0, 604800.0.
    typicality : bool, default False
        Run the per-caller typicality CUSUM below (off by default: on the generator's traffic it
        also accumulates evidence against heavy benign callers after a mild covariate drift).
    atypical_ratio : float, default 5.0
        Per-caller typicality CUSUM: each query's surprisal ``-log p`` (``p`` its score's
        held-out reference p-value; exponential with mean 1 for natural queries) is tested
        against an exponential with mean ``atypical_ratio``.
    atypical_arl : float, default 1e7
        CUSUM threshold ``log(atypical_arl)``.
    refresh : bool, default True
        Refresh the reference after a population shift (see the module docstring).
    reference_caller_cap : float, default 0.02
        Largest share of the reference (first and refreshed) one caller may hold; a stream with
        very few callers completes it after ``3 * reference_events`` events.
    shift_factor, shift_arl, shift_caller_window : float, float, int
        Population-shift CUSUM on the OOD flags of established callers: rate ``1 - ood_quantile``
        against ``shift_factor`` times it, threshold ``log(shift_arl)``, one flag per caller per
        ``shift_caller_window`` events (5.0, 1e6, 1000).

    Examples
    --------
    >>> from pipeline.events import batch_from_arrays, FeatureSchema, RouteKey
    >>> rng = np.random.default_rng(0)
    >>> ctx = DetectorContext(RouteKey("m", None), FeatureSchema(tuple(f"f{i}" for i in range(8))))
    >>> det = ExtractionDetector(ctx)
    >>> W = rng.normal(size=(3, 8))
    >>> benign = rng.normal(size=(2500, 3)) @ W + 0.1 * rng.normal(size=(2500, 8))
    >>> thief = rng.uniform(-6, 6, size=(30, 8))
    >>> X = np.vstack([benign, thief])
    >>> clients = [f"b{i % 50}" for i in range(2500)] + ["thief"] * 30
    >>> out = det.process(batch_from_arrays(X, client_ids=clients))
    >>> [(f.client_id, f.trigger_event_id) for f in out.findings]
    [('thief', 'e2509')]
    """

    name: ClassVar[str] = "extraction"
    state_version: ClassVar[int] = 4

    def __init__(
        self,
        context: DetectorContext,
        *,
        reference_events: int = 2000,
        var_kept: float = 0.9,
        max_components: int = 32,
        clip: float = 1000.0,
        ood_quantile: float = 0.99,
        window: int = 32,
        ood_threshold: int = 10,
        prada_history: int = 32,
        prada_threshold: float = 0.5,
        prada_every: int = 4,
        prada: bool = False,
        derived_quantile: float = 0.001,
        derived_threshold: int | None = 5,
        max_evidence: int = 50,
        max_callers: int = 1_000_000,
        ttl: float = 86400.0,
        suspicious_ttl: float = 604800.0,
        typicality: bool = False,
        atypical_ratio: float = 5.0,
        atypical_arl: float = 1e7,
        refresh: bool = True,
        reference_caller_cap: float = 0.02,
        shift_factor: float = 5.0,
        shift_arl: float = 1e6,
        shift_caller_window: int = 1000,
    ) -> None:
        if atypical_ratio <= 1.0 or atypical_arl <= 1.0:
            raise ValueError("atypical_ratio and atypical_arl must be > 1")
        if not 0.0 < reference_caller_cap <= 1.0:
            raise ValueError("reference_caller_cap must be in (0, 1]")
        if shift_factor <= 1.0 or shift_factor * (1.0 - ood_quantile) >= 1.0 or shift_arl <= 1.0 \
                or shift_caller_window < 1:
            raise ValueError("need shift_factor > 1 with shift_factor * (1 - ood_quantile) < 1, "
                             "shift_arl > 1, shift_caller_window >= 1")
        if reference_events < 50:
            raise ValueError("reference_events must be >= 50")
        if not 0.0 < var_kept < 1.0 or max_components < 1 or clip <= 0:
            raise ValueError("invalid subspace settings")
        if not 0.5 <= ood_quantile < 1.0:
            raise ValueError("ood_quantile must be in [0.5, 1)")
        if not 2 <= window <= 255 or not 1 <= ood_threshold <= window:
            raise ValueError("need 2 <= window <= 255 and 1 <= ood_threshold <= window")
        if not 1 <= prada_history <= window or window < 8 or window % prada_history:
            raise ValueError("need 1 <= prada_history <= window, prada_history dividing window, window >= 8")
        if prada_every < 1:
            raise ValueError("prada_every must be >= 1")
        if not 0.0 < derived_quantile < 0.5 or (derived_threshold is not None and not 1 <= derived_threshold <= window):
            raise ValueError("need 0 < derived_quantile < 0.5 and derived_threshold None or in [1, window]")
        if not 0.0 < prada_threshold < 1.0:
            raise ValueError("prada_threshold must be in (0, 1)")
        if max_evidence < 1 or max_callers < 1 or ttl <= 0 or suspicious_ttl <= 0:
            raise ValueError("max_evidence, max_callers, ttl, suspicious_ttl must be positive")
        super().__init__(
            context, reference_events=reference_events, var_kept=var_kept,
            max_components=max_components, clip=clip, ood_quantile=ood_quantile, window=window,
            ood_threshold=ood_threshold, prada_history=prada_history,
            prada_threshold=prada_threshold, prada_every=prada_every, prada=prada, derived_quantile=derived_quantile,
            derived_threshold=derived_threshold, max_evidence=max_evidence, max_callers=max_callers,
            ttl=ttl, suspicious_ttl=suspicious_ttl, typicality=typicality, atypical_ratio=atypical_ratio,
            atypical_arl=atypical_arl, refresh=refresh, reference_caller_cap=reference_caller_cap,
            shift_factor=shift_factor, shift_arl=shift_arl, shift_caller_window=shift_caller_window,
        )
        lam = 1.0 / atypical_ratio
        self._atyp_a, self._atyp_b = math.log(lam), 1.0 - lam  # LLR = a + b * (-log p)
        self.atyp_h = math.log(atypical_arl)
        self.typicality = typicality
        self.refresh = refresh
        self.reference_caller_cap = reference_caller_cap
        self.monitor = ShiftMonitor(1.0 - ood_quantile, shift_factor, shift_arl, shift_caller_window)
        self.shift: dict[str, Any] | None = None
        self._next: CappedReference | None = None
        self.refreshes: list[dict[str, Any]] = []
        self._held = np.empty(0)
        self._fp_model: SubspaceModel | None = None  # coordinates of the PRADA fingerprints
        self.reference_events = reference_events
        self._coll: CappedReference | None = self._new_collector()
        self.reference_events = reference_events
        self.var_kept = var_kept
        self.max_components = max_components
        self.clip = clip
        self.ood_quantile = ood_quantile
        self.W = window
        self.T = ood_threshold
        self.H = prada_history
        self.delta = prada_threshold
        self.prada_every = prada_every
        self.prada = prada
        self.derived_quantile = derived_quantile
        self.D = derived_threshold
        self.max_evidence = max_evidence
        d = context.schema.n_numeric
        self._buf = WarmupBuffer(3 * reference_events, d)
        rng = np.random.default_rng([context.seed, 0xE7])
        # fingerprints: per-feature RMS distances are ||y - y'|| / sqrt(K) (exact when d <= FP_DIMS)
        self.K = max(min(d, FP_DIMS), 1)
        self._project = d > FP_DIMS
        self.R = rng.normal(size=(d, FP_DIMS)) / np.sqrt(d) if self._project else np.eye(d, self.K)
        self.P = rng.normal(size=(self.K, PRADA_DIMS)).astype(np.float32) / np.float32(np.sqrt(PRADA_DIMS))
        self.derived_radius = float("nan")
        self._model: SubspaceModel | None = None
        self.ood_thr = float("nan")
        self._ref_span = (float("nan"), float("nan"))
        self.table = CallerTable(
            max_callers, ttl, suspicious_ttl,
            {
                "ohead": ((), np.int32, 0),
                "olen": ((), np.int32, 0),
                "flags": ((window,), np.uint8, 0),  # bit 0: OOD, bit 1: derived
                "hist": ((prada_history, self.K), np.int8, 0),
                "dist": ((window if prada else 1,), np.float16, np.nan),  # PRADA's distances
                "n_q": ((), np.int64, 0),
                "first_ts": ((), np.float64, np.nan),
                "first_ev": ((), np.float64, np.nan),
                "alerted": ((), bool, False),
                "atyp": ((), np.int64, 0),  # typicality CUSUM in units of 1 / ATYP_UNIT
            },
            on_reset=self._on_reset,
        )
        self._evidence: dict[int, list[str]] = {}
        self._alerts: dict[int, dict[str, Any]] = {}  # slot -> the caller's open alert (for its updates)

    def _on_reset(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            self._evidence.pop(s, None)
            self._alerts.pop(s, None)

    def _updates(self, batch: EventBatch, lay: Any, srows: np.ndarray, alerted_before: np.ndarray,
                 evid: np.ndarray, score: np.ndarray, ood_count: np.ndarray, derived_count: np.ndarray,
                 wprime: np.ndarray, S_atyp: np.ndarray) -> list[Finding]:
        """Updates of open extraction alerts: a caller flagged earlier that keeps querying gets its
        alert updated every ``UPDATE_EVERY`` queries (``window_end``, score, counts, evidence up to
        ``max_evidence``), as campaign alerts are, so a reviewer sees how far the extraction went.
        Positions follow each caller's query count, so updates do not depend on batch cuts."""
        A = self.table.arrays
        post = alerted_before.copy()
        gid = np.repeat(np.arange(len(lay.group_slots)), lay.group_sizes)
        for alert in self._alerts.values():
            p0 = alert.pop("pos", None)  # fired in this batch: the caller's later queries in it count
            if p0 is not None:
                end = int(lay.group_starts[gid[p0]] + lay.group_sizes[gid[p0]])
                post[p0 + 1:end] = True
        if not post.any():
            return []
        # per caller: its alert's query count at the trigger and the evidence slots left (callers
        # alerted before alerts were kept, by a snapshot of an older version, get no updates)
        n_at_g = np.full(len(lay.group_slots), -1, dtype=np.int64)
        room_g = np.zeros(len(lay.group_slots), dtype=np.int64)
        for g, slot in enumerate(lay.group_slots.tolist()):
            if slot in self._alerts:
                n_at_g[g] = int(self._alerts[slot]["n_at"])
                room_g[g] = self.max_evidence - len(self._alerts[slot]["evidence"])
        post &= n_at_g[gid] >= 0
        starts = lay.group_starts[gid]
        n_q = A["n_q"][lay.slot] + (np.arange(len(post)) - starts) + 1
        since = n_q - n_at_g[gid]
        due = post & (since > 0) & (since % UPDATE_EVERY == 0)
        # only the caller's first flagged queries that still fit the evidence cap: no per-query loop
        new_ev = (post & evid).astype(np.int64)
        rank = np.cumsum(new_ev) - (np.cumsum(new_ev) - new_ev)[lay.group_starts][gid]
        keep_ev = (new_ev > 0) & (rank <= room_g[gid])
        out: list[Finding] = []
        for p in np.flatnonzero(due | keep_ev).tolist():
            open_alert = self._alerts[int(lay.slot[p])]
            if keep_ev[p]:
                open_alert["evidence"].append(batch.event_ids[int(srows[p])])
            if not due[p]:
                continue
            t = float(batch.ts[int(srows[p])])
            first = open_alert["explanation"]
            expl = {**first,
                    "summary": (f"flagged caller goes on: {int(n_q[p])} queries so far; now {int(ood_count[p])} of "
                                f"its last {min(self.W, int(n_q[p]))} out of distribution"
                                + (f", {int(derived_count[p])} derived from its own earlier ones" if self.D is not None
                                   else "") + f" (flagged at query {int(open_alert['n_at'])})"),
                    "ood_count": int(ood_count[p]), "derived_count": int(derived_count[p]),
                    "prada_w": None if not np.isfinite(wprime[p]) else float(wprime[p]),
                    "typicality_cusum": float(S_atyp[p] / ATYP_UNIT) if len(S_atyp) else 0.0,
                    "caller_queries_so_far": int(n_q[p]),
                    "at_trigger": {"score": open_alert["score"], "summary": first["summary"],
                                   "raised_at": time_at(float(open_alert["raised_at"]))}}
            sev = Severity.CRITICAL if score[p] >= 2.0 or open_alert["severity"] == Severity.CRITICAL.value \
                else Severity.WARNING
            out.append(Finding(
                kind=Kind.EXTRACTION, detector=self.name, config_hash=self.config_hash,
                trigger_event_id=open_alert["trigger"], raised_at=float(open_alert["raised_at"]), score=float(score[p]),
                threshold=1.0, severity=sev, explanation=expl, client_id=batch.client_ids[int(srows[p])],
                window_start=float(open_alert["window_start"]), window_end=t, updated_at=t,
                event_ids=tuple(open_alert["evidence"]), is_update=True,
            ))
        return out

    # ---------------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, ts: np.ndarray, keys: np.ndarray) -> None:
        self._model, held = SubspaceModel.fit(X, self.var_kept, self.max_components, self.clip)
        if self._fp_model is None:
            self._fp_model = self._model
        self.ood_thr = float(np.quantile(held, self.ood_quantile))
        self.derived_radius = self._natural_nn_quantile(X, keys)
        self._held = np.sort(held)
        self._ref_span = (float(ts.min()), float(ts.max()))
        self.monitor.restart()

    def _fingerprints(self, Zc: np.ndarray) -> np.ndarray:
        """int8 fingerprints of clipped standardised inputs (see FP_DIMS, FP_QUANT)."""
        Y = Zc @ self.R if self._project else Zc[:, : self.K]
        return np.clip(np.rint(Y * FP_QUANT), -127, 127).astype(np.int8)

    def _history(self, oi: Window, n_groups: int) -> Window:
        """The last ``prada_history`` columns of the window ``oi``, re-pointed at the fingerprint ring.

        That ring holds ``H`` rows per caller written at the window ring's position modulo ``H``
        (``H`` divides ``window``), so ring item ``g * W + p`` of the window pool is ``g * H + p % H``
        of the fingerprint pool, and the batch's own items shift by ``G * (H - W)``.
        """
        W, H = self.W, self.H
        idx = oi.index[:, -H:]
        ring = idx < n_groups * W
        g = idx // W
        mapped = np.where(ring, g * H + (idx - g * W) % H, idx - n_groups * (W - H))
        return Window(mapped.astype(np.int32, copy=False), oi.valid[:, -H:], H)

    def _nn(self, Yw: np.ndarray, y: np.ndarray, valid: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Squared fingerprint distances of ``y`` (n, K) to its windows ``Yw`` (n, H, K, float32;
        overwritten), the same in PRADA's ``PRADA_DIMS``-dimensional projection, and exact repeats
        (both distances ``inf`` where there is no item or an exact repeat).

        PRADA keeps a coarse projection: its normality test was calibrated on distances with that
        much projection noise, which smooths the occasional very close natural pair (a re-sent
        image with new pixel noise) that makes precise log-distances bimodal and ``W'`` small.
        """
        diff = np.subtract(Yw, y.astype(np.float32)[:, None, :], out=Yw)
        d2 = np.einsum("nkp,nkp->nk", diff, diff)
        exact = valid & (d2 == 0.0)
        miss = ~valid | exact
        np.copyto(d2, np.inf, where=miss)
        if not self.prada:
            return d2, d2, exact
        proj = diff @ self.P
        d2p = np.einsum("nkp,nkp->nk", proj, proj)
        np.copyto(d2p, np.inf, where=miss)
        return d2, d2p, exact

    def _natural_nn_quantile(self, X: np.ndarray, keys: np.ndarray) -> float:
        """Distance below which a natural query's nearest neighbour among ``prada_history``
        unrelated natural queries falls with probability ``derived_quantile``.

        With ``G`` the distribution of distances between two reference events of *different*
        callers (``keys``; exact repeats left out), the nearest of ``H`` unrelated queries is below
        ``r`` with probability ``1 - (1 - G(r))^H``; so ``r`` is ``G``'s quantile at
        ``1 - (1 - q)^(1 / H)``. Pairs of one caller are left out: a caller that sent related queries
        during the reference period (a slow boundary walk, up to 2% of the reference) would otherwise
        make them the natural tail and shrink the radius below its own steps.
        """
        fp = self._fp_model
        assert fp is not None
        Y = self._fingerprints(standardise(fp.tf.apply(X), fp.center, fp.scale, FP_CLIP)).astype(np.float64)
        inside = np.abs(Y).max(axis=1, initial=0.0) < 127  # as for the stream: clipped rows are left out
        Y, keys = Y[inside], keys[inside]
        n = len(Y)
        g = 1.0 - (1.0 - self.derived_quantile) ** (1.0 / self.H)
        m = int(g * n * (n - 1) / 2) + 2  # the smallest m pairs hold the quantile (at most n(n-1)/2 pairs)
        sq = np.einsum("ij,ij->i", Y, Y)
        tiny = 0.5  # squared distances of int8 fingerprints are integers: exact repeats left out
        keep, count = [], 0
        for a in range(0, n, 256):  # row blocks of the upper triangle: a few MB at a time, not n^2 pairs
            b = min(a + 256, n)
            D2 = sq[a:b, None] + sq[None, a:] - 2.0 * (Y[a:b] @ Y[a:].T)
            ok = (keys[a:b, None] != keys[None, a:]) & (D2 > tiny)
            ok[:, : b - a] &= ~np.tri(b - a, dtype=bool)  # columns after the row only
            v = D2[ok]
            count += v.size
            keep.append(np.partition(v, m - 1)[:m] if v.size > m else v)
        if count == 0:
            return 0.0
        v = np.sort(np.concatenate(keep))
        pos = g * (count - 1)  # np.quantile's linear interpolation between order statistics
        lo = int(pos)
        q = v[lo] + (pos - lo) * (v[min(lo + 1, v.size - 1)] - v[lo])
        return float(np.sqrt(q / self.K) / FP_QUANT)

    def _new_collector(self) -> CappedReference:
        n = self.reference_events
        return CappedReference(n, self.context.schema.n_numeric, math.ceil(self.reference_caller_cap * n), 3 * n)

    def process(self, batch: EventBatch) -> DetectorOutput:
        if self._model is None:
            # caller-capped reference (as for `outlier`); every event is held back until it is complete
            assert self._coll is not None
            done = self._coll.add(batch)
            upto = len(batch) if done is None else done + 1
            self._buf.add(batch if upto == len(batch) else take_batch(batch, np.arange(upto)))
            if done is None:
                return EMPTY_OUTPUT
            X, _, ts = self._coll.arrays()
            self._fit(X, ts, self._coll.caller_keys())
            self.monitor.restart(self._coll.counts)
            self._coll = None
            held = self._buf.as_batch(batch)
            self._buf.clear()
            out1 = self._run(held)
            if upto >= len(batch):
                return out1
            return DetectorOutput.merge([out1, self._run(take_batch(batch, np.arange(upto, len(batch))))])
        return self._run(batch)

    def _event_scores(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        assert self._model is not None
        r, m, a = self._model.scores(X, Z)
        return np.maximum(np.maximum(r, m), a)  # type: ignore[no-any-return]

    def _shared_z(self, X: np.ndarray) -> np.ndarray | None:
        """The scoring model's standardised inputs when they also give the PRADA fingerprints (the
        fingerprint model *is* the scoring model - before any refresh - and its clip is no tighter
        than the fingerprints' 50): one transform per batch instead of two, same values."""
        mdl = self._model
        if mdl is None or self._fp_model is not mdl or mdl.clip < FP_CLIP:
            return None
        return mdl.transform(X)

    def _run(self, batch: EventBatch) -> DetectorOutput:
        """Split the batch where a population shift starts or a refreshed reference completes."""
        outs: list[DetectorOutput] = []
        start = 0
        while start < len(batch):
            sub = batch if start == 0 else take_batch(batch, np.arange(start, len(batch)))
            alarm = done = None
            score_ev: np.ndarray | None = None
            Zb: np.ndarray | None = None
            if self.shift is None:
                Zb = self._shared_z(sub.X)
                score_ev = self._event_scores(sub.X, Zb)
                if self.refresh:
                    alarm = self.monitor.advance(sub.client_ids, score_ev > self.ood_thr)
                end = len(sub) if alarm is None else alarm + 1
            else:
                assert self._next is not None
                done = self._next.add(sub)
                end = len(sub) if done is None else done + 1
            part = sub if end == len(sub) else take_batch(sub, np.arange(end))
            outs.append(self._process(part, None if score_ev is None else score_ev[:end],
                                      None if Zb is None else Zb[:end]))
            if alarm is not None:
                self.shift = {"at_event": sub.event_ids[alarm], "at_ts": float(sub.ts[alarm])}
                self._next = self._new_collector()
                self.table.arrays["atyp"][:] = 0  # evidence gathered against the old reference
            if done is not None:
                assert self._next is not None and self.shift is not None
                X, _, ts = self._next.arrays()
                self._fit(X, ts, self._next.caller_keys())
                self.monitor.restart(self._next.counts)
                self.refreshes.append({"at_event": sub.event_ids[done], "at_ts": float(sub.ts[done]),
                                       "shift_at_event": self.shift["at_event"],
                                       "shift_at_ts": self.shift["at_ts"]})
                self.refreshes = self.refreshes[-10:]
                self.shift = None
                self._next = None
            start += end
        return DetectorOutput.merge(outs) if len(outs) > 1 else outs[0]

    def _process(self, batch: EventBatch, score_all: np.ndarray | None,
                 z_all: np.ndarray | None = None) -> DetectorOutput:
        assert self._model is not None
        codes, callers = caller_codes(batch.client_ids)
        rows = np.flatnonzero(codes >= 0)
        if rows.size == 0:
            return EMPTY_OUTPUT
        codes = codes[rows]
        ts = batch.ts[rows]
        first_idx = first_occurrences(codes)
        tab = self.table
        A = tab.arrays
        cslots = tab.assign(callers, ts[first_idx])
        lay = make_layout(cslots[codes])
        srows = rows[lay.order]
        Xs = batch.X[srows]
        mdl = self._model
        if score_all is None:  # in a population shift: OOD and typicality evidence suspended
            score_ev = np.full(len(Xs), -np.inf)
        else:
            score_ev = score_all[srows]
        ood = (score_ev > self.ood_thr).astype(np.uint8)
        # PRADA: nearest-neighbour distance to the previous `prada_history` queries
        # PRADA fingerprints stay in the first reference's coordinates: a refresh must not mix two
        # scalings inside one caller's distance history
        fp = self._fp_model if self._fp_model is not None else mdl
        if z_all is not None:  # the same standardised values, clipped at FP_CLIP (see _shared_z)
            Y = self._fingerprints(np.clip(z_all[srows], -FP_CLIP, FP_CLIP))
        else:
            Y = self._fingerprints(standardise(fp.tf.apply(Xs), fp.center, fp.scale, FP_CLIP))
        oi = window_index(lay, A["ohead"], A["olen"], self.W)
        hi = self._history(oi, len(lay.group_slots))
        d2, d2p, exact = self._nn(hi.gather(A["hist"], Y, lay, np.float32), Y, hi.valid)
        dist32 = np.sqrt(d2.min(axis=1) / self.K) / FP_QUANT  # inf if none
        # derived query: its nearest earlier own query is closer than natural neighbours ever are
        if self.D is not None:
            inside = np.abs(Y.astype(np.int16)).max(axis=1, initial=0) < 127  # no clipped coordinate
            derived = ((dist32 < self.derived_radius) & inside).astype(np.uint8)
        else:
            derived = np.zeros_like(ood)
        if self.prada:
            distp = np.sqrt(d2p.min(axis=1) / self.K)
            dist = np.where(np.isfinite(distp), distp, np.nan).astype(np.float16)
        # OOD and derived counts over the last `window` queries (this one included)
        bits = ood | (derived << 1)
        fw = oi.gather(A["flags"], bits, lay)[:, 1:] * oi.valid[:, 1:]
        ood_count = (fw & 1).sum(axis=1) + ood
        derived_count = (fw >> 1).sum(axis=1) + derived
        # the normality test runs at every `prada_every`-th query of a caller (a per-caller count,
        # so batch-invariant) once all `window` distances come from full histories
        nth = A["n_q"][lay.slot] + lay.rank + 1
        sel = np.flatnonzero((nth % self.prada_every == 0) & (nth > self.W + self.H)) if self.prada \
            else np.empty(0, dtype=np.int64)
        wprime = np.full(len(Xs), np.nan)
        if sel.size:
            sw = Window(oi.index[sel], oi.valid[sel], self.W)
            dw = np.where(sw.valid, sw.gather(A["dist"], dist, lay), np.float16(np.nan))
            D = np.concatenate([dw[:, 1:], dist[sel, None]], axis=1).astype(np.float64)
            D = np.log(np.maximum(D, 1e-6))
            full = np.isfinite(D).all(axis=1)
            if full.any():
                wprime[sel[full]] = shapiro_francia(D[full])
        prada = np.where(np.isfinite(wprime), (1.0 - wprime) / (1.0 - self.delta), 0.0)
        # typicality CUSUM: -log p of each query's score against the held-out reference scores
        # (Exp(1) for natural queries) tested against Exp(mean atypical_ratio); exact repeats of a
        # query in the caller's history add nothing (a canary or a retry is one input)
        nh = self._held.size
        if score_all is None or nh == 0 or not self.typicality:
            S_atyp = np.zeros(len(Xs), dtype=np.int64)
        else:
            n_ge = nh - np.searchsorted(self._held, score_ev, side="left")
            surpr = -np.log((1.0 + n_ge) / (nh + 1.0))
            llr = self._atyp_a + self._atyp_b * surpr
            inc = np.where(exact.any(axis=1), 0, np.round(llr * ATYP_UNIT)).astype(np.int64)
            gi = np.repeat(np.arange(len(lay.group_slots), dtype=np.int64), lay.group_sizes)
            cs = np.cumsum(inc)
            base = (cs - inc)[lay.group_starts]  # cumulative sum before each group
            C = A["atyp"][lay.slot] + cs - base[gi]
            M = np.minimum.accumulate(C - gi * _SEG) + gi * _SEG  # running minimum within each group
            S_atyp = C - np.minimum(M, 0)
        atyp = S_atyp / (self.atyp_h * ATYP_UNIT)
        score = np.maximum(np.maximum(ood_count / self.T, prada), atyp)
        if self.D is not None:
            score = np.maximum(score, derived_count / self.D)
        alerted_before = A["alerted"][lay.slot].copy()
        fire = (score >= 1.0) & ~alerted_before
        findings: list[Finding] = []
        flagged: list[FlaggedEvent] = []
        # evidence: OOD and derived queries of callers (bounded per caller)
        evid = bits > 0
        ev_pos = np.flatnonzero(evid)
        if ev_pos.size:
            for p in ev_pos.tolist():
                s = int(lay.slot[p])
                if A["alerted"][s]:
                    continue
                lst = self._evidence.setdefault(s, [])
                if len(lst) < self.max_evidence:
                    lst.append(batch.event_ids[int(srows[p])])
                tab.protected[s] = True
        if fire.any():
            first = group_first(fire, lay, fire)
            names = self.context.schema.numeric
            for p in first[first >= 0].tolist():
                s = int(lay.slot[p])
                A["alerted"][s] = True
                tab.protected[s] = True
                row = int(srows[p])
                eid = batch.event_ids[row]
                cid = batch.client_ids[row]
                t = float(batch.ts[row])
                g = int(np.searchsorted(lay.group_starts, p, side="right") - 1)
                g0 = int(lay.group_starts[g])
                ev = [e for e in self._evidence.get(s, [])]
                # evidence ids recorded for this batch may include events after the trigger
                later = {batch.event_ids[int(srows[q])] for q in range(p + 1, g0 + int(lay.group_sizes[g]))}
                ev = [e for e in ev if e not in later]
                if eid not in ev:
                    ev = ev[: self.max_evidence - 1] + [eid]
                n_q = int(A["n_q"][s]) + (p - g0) + 1
                ts_g = ts[lay.order][g0:p + 1]
                ev_g = evid[g0:p + 1]
                first_ts = float(A["first_ts"][s]) if np.isfinite(A["first_ts"][s]) else float(ts_g[0])
                first_ev = float(A["first_ev"][s])
                if not np.isfinite(first_ev) and ev_g.any():
                    first_ev = float(ts_g[np.argmax(ev_g)])
                window_start = first_ev if np.isfinite(first_ev) else first_ts
                zt = np.abs(mdl.transform(Xs[p:p + 1]))[0]
                top = np.argsort(-zt, kind="stable")[:5]
                wp = wprime[p]
                n_win = min(self.W, n_q)
                parts: list[tuple[float, str]] = []  # (share of its alert level, text)
                if np.isfinite(wp):
                    verdict = "non-normal" if wp < self.delta else "normal"
                    cmp = "<" if wp < self.delta else ">="
                    parts.append(((1.0 - wp) / (1.0 - self.delta),
                                  f"PRADA: successive-query distances {verdict} (W'={wp:.2f} {cmp} "
                                  f"{self.delta}) over {self.W} queries"))
                parts.append((int(ood_count[p]) / self.T,
                              f"{int(ood_count[p])} of its last {n_win} queries out of distribution "
                              f"(alert at {self.T})"))
                if self.D is not None:
                    parts.append((int(derived_count[p]) / self.D,
                                  f"{int(derived_count[p])} of its last {n_win} queries derived from one of its "
                                  f"own last {self.H} (nearest within {self.derived_radius:.3f}, closer than "
                                  f"{self.derived_quantile:.1%} of natural nearest neighbours; alert at {self.D})"))
                if atyp[p] >= 1.0:
                    parts.append((float(atyp[p]),
                                  f"its queries persistently atypical for the reference (typicality CUSUM "
                                  f"{S_atyp[p] / ATYP_UNIT:.1f} >= {self.atyp_h:.1f})"))
                # the signal that fired first, so the one-line summary says why the caller was flagged
                parts.sort(key=lambda part: -part[0])
                summary = "; ".join(text for _, text in parts) + f"; caller has sent {n_q} queries"
                expl = {
                    "summary": summary,
                    "statistic": "max(ood_count / ood_threshold, (1 - W') / (1 - prada_threshold), "
                                 "typicality_cusum / typicality_threshold, derived_count / derived_threshold)",
                    "ood_count": int(ood_count[p]),
                    "ood_threshold": self.T,
                    "window": self.W,
                    "ood_event_threshold": self.ood_thr,
                    "derived_count": int(derived_count[p]),
                    "derived_threshold": self.D,
                    "derived_radius": self.derived_radius,
                    "derived_distance": None if not np.isfinite(dist32[p]) else float(dist32[p]),
                    "prada_w": None if not np.isfinite(wprime[p]) else float(wprime[p]),
                    "prada_threshold": self.delta,
                    "typicality_cusum": float(S_atyp[p] / ATYP_UNIT),
                    "typicality_threshold": self.atyp_h,
                    "reference_refreshed": dict(self.refreshes[-1]) if self.refreshes else None,
                    "prada_distances": self.W,
                    "caller_queries_so_far": n_q,
                    "first_query_ts": first_ts,
                    "first_query_at": time_at(first_ts),
                    "trigger_top_features": [
                        {"feature": names[j] if j < len(names) else f"f{j}", "robust_z": float(zt[j])}
                        for j in top.tolist()
                    ],
                    "reference_events": self.reference_events,
                    "reference_period": with_rfc3339(dict(zip(("start", "end"), self._ref_span, strict=True))),
                    "evidence_cap": self.max_evidence,
                    "config_hash": self.config_hash,
                }
                sev = Severity.CRITICAL if score[p] >= 2.0 else Severity.WARNING
                findings.append(Finding(
                    kind=Kind.EXTRACTION, detector=self.name, config_hash=self.config_hash,
                    trigger_event_id=eid, raised_at=t, score=float(score[p]), threshold=1.0,
                    severity=sev, explanation=expl, client_id=cid,
                    window_start=window_start, window_end=t, event_ids=tuple(ev),
                ))
                flagged.append(FlaggedEvent(
                    eid, self.name, float(score[p]), 1.0,
                    f"extraction: {int(ood_count[p])} OOD and {int(derived_count[p])} derived of last {self.W}, "
                    f"W'={wprime[p]:.3f}", cid,
                ))
                self._evidence.pop(s, None)
                self._alerts[s] = {"trigger": eid, "raised_at": t, "n_at": n_q, "pos": p, "score": float(score[p]),
                                   "severity": sev.value, "window_start": window_start, "evidence": list(ev),
                                   "explanation": expl}
        findings += self._updates(batch, lay, srows, alerted_before, evid, score, ood_count, derived_count,
                                  wprime, S_atyp)
        # ---- state update ----
        ring_write(A["flags"], bits, lay, A["ohead"], self.W)
        ring_write(A["hist"], Y, lay, A["ohead"], self.H)  # at the window position mod H (see _history)
        if self.prada:
            ring_write(A["dist"], dist, lay, A["ohead"], self.W)
        ring_advance(A["ohead"], A["olen"], lay, self.W)
        ts_sorted = ts[lay.order]
        gslots = lay.group_slots
        A["first_ts"][gslots] = np.where(np.isfinite(A["first_ts"][gslots]), A["first_ts"][gslots],
                                         ts_sorted[lay.group_starts])
        fo = group_first(bits, lay, evid)
        has = fo >= 0
        cur = A["first_ev"][gslots[has]]
        A["first_ev"][gslots[has]] = np.where(np.isfinite(cur), cur, ts_sorted[fo[has]])
        A["n_q"][lay.group_slots] += lay.group_sizes
        if self.typicality and len(S_atyp):
            last_s = S_atyp[lay.group_starts + lay.group_sizes - 1]
            A["atyp"][lay.group_slots] = np.minimum(last_s, 2**36)
            tab.protected[lay.group_slots[last_s > 0.5 * self.atyp_h * ATYP_UNIT]] = True
        tab.last_ts[lay.group_slots] = ts[lay.order][lay.group_starts + lay.group_sizes - 1]
        return DetectorOutput(findings=tuple(findings), flagged=tuple(flagged))

    # ---------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "buffer": self._buf.state() if self._model is None else None,
            "collector": self._coll.state() if self._coll is not None else None,
            "model": self._model.state() if self._model is not None else None,
            "ood_thr": self.ood_thr,
            "derived_radius": self.derived_radius,
            "ref_span": list(self._ref_span),
            "table": self.table.state(),
            "evidence": {str(k): list(v) for k, v in self._evidence.items()},
            "alerts": {str(k): {**v, "evidence": list(v["evidence"])} for k, v in self._alerts.items()},
            "held": self._held.copy(),
            "fp_model": self._fp_model.state() if self._fp_model is not None else None,
            **self.monitor.state(),
            "shift": dict(self.shift) if self.shift is not None else None,
            "next": self._next.state() if self._next is not None else None,
            "refreshes": [dict(x) for x in self.refreshes],
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._coll = None
        if state["collector"] is not None:
            self._coll = self._new_collector()
            self._coll.load(state["collector"])
        if state["model"] is None:
            self._model = None
            self._buf.load(state["buffer"])
        else:
            self._model = SubspaceModel.load(state["model"])
            self._buf.clear()
        self.ood_thr = float(state["ood_thr"])
        self.derived_radius = float(state["derived_radius"])
        self._ref_span = (float(state["ref_span"][0]), float(state["ref_span"][1]))
        self.table.load(state["table"])
        self._evidence = {int(k): list(v) for k, v in state["evidence"].items()}
        self._alerts = {int(k): {**v, "evidence": list(v["evidence"])} for k, v in state.get("alerts", {}).items()}
        self._held = np.asarray(state["held"], dtype=np.float64)
        self._fp_model = SubspaceModel.load(state["fp_model"]) if state["fp_model"] is not None else None
        self.monitor.load(state)
        self.shift = dict(state["shift"]) if state["shift"] is not None else None
        self._next = None
        if state["next"] is not None:
            self._next = self._new_collector()
            self._next.load(state["next"])
        self.refreshes = [dict(x) for x in state["refreshes"]]
