"""Shared machinery of the attack detectors: warm-up buffering, robust subspace scoring,
tail calibration, per-caller slot tables with bounded memory, and ring-buffer gathers.

Everything here is vectorised over a micro-batch. Per-caller sequential semantics are kept by
sorting a batch's events by caller slot (stable, so stream order is kept inside a caller) and
computing, for every event, the indices of the items that a one-event-at-a-time run would have
seen: the tail of the caller's stored ring plus the caller's earlier events in the same batch.
"""

from __future__ import annotations

import itertools
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.events import EventBatch

# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------


def take_batch(batch: EventBatch, idx: np.ndarray) -> EventBatch:
    """Rows ``idx`` of ``batch`` as a new batch (same route and schema)."""
    idx = np.asarray(idx, dtype=np.int64)
    il = idx.tolist()
    return EventBatch(
        route=batch.route,
        schema=batch.schema,
        event_ids=[batch.event_ids[i] for i in il],
        ts=batch.ts[idx],
        client_ids=[batch.client_ids[i] for i in il],
        X=batch.X[idx],
        C=batch.C[idx] if batch.C.shape[0] == len(batch) else batch.C,
        prediction=[batch.prediction[i] for i in il],
        prediction_value=batch.prediction_value[idx],
        confidence=batch.confidence[idx],
        margin=batch.margin[idx],
        entropy=batch.entropy[idx],
        label=[batch.label[i] for i in il] if len(batch.label) == len(batch) else [None] * len(il),
        payloads=[],
    )


class WarmupBuffer:
    """Holds the first ``size`` events of a route (the fields the attack detectors use).

    Bounded: never more than ``size`` rows. ``add`` returns the number of rows of the batch it
    consumed; once full, :meth:`arrays` gives the buffered events in stream order.
    """

    def __init__(self, size: int, n_features: int) -> None:
        self.size = size
        self.X = np.empty((0, n_features))
        self.ts = np.empty(0)
        self.margin = np.empty(0)
        self.event_ids: list[str] = []
        self.client_ids: list[str | None] = []
        self.prediction: list[str] = []

    @property
    def n(self) -> int:
        return len(self.event_ids)

    @property
    def full(self) -> bool:
        return self.n >= self.size

    def add(self, batch: EventBatch) -> int:
        take = min(self.size - self.n, len(batch))
        if take <= 0:
            return 0
        if self.X.shape[1] != batch.X.shape[1]:
            self.X = np.empty((0, batch.X.shape[1]))
        self.X = np.concatenate([self.X, batch.X[:take]])
        self.ts = np.concatenate([self.ts, batch.ts[:take]])
        self.margin = np.concatenate([self.margin, batch.margin[:take]])
        self.event_ids.extend(batch.event_ids[:take])
        self.client_ids.extend(batch.client_ids[:take])
        self.prediction.extend(batch.prediction[:take])
        return take

    def as_batch(self, like: EventBatch) -> EventBatch:
        n = self.n
        nan = np.full(n, np.nan)
        return EventBatch(
            route=like.route,
            schema=like.schema,
            event_ids=list(self.event_ids),
            ts=self.ts.copy(),
            client_ids=list(self.client_ids),
            X=self.X.copy(),
            C=np.empty((n, 0), dtype=object),
            prediction=list(self.prediction),
            prediction_value=nan.copy(),
            confidence=nan.copy(),
            margin=self.margin.copy(),
            entropy=nan,
            label=[None] * n,
            payloads=[],
        )

    def clear(self) -> None:
        self.__init__(self.size, self.X.shape[1])  # type: ignore[misc]

    def state(self) -> dict[str, Any]:
        return {
            "X": self.X.copy(),
            "ts": self.ts.copy(),
            "margin": self.margin.copy(),
            "event_ids": list(self.event_ids),
            "client_ids": list(self.client_ids),
            "prediction": list(self.prediction),
        }

    def load(self, s: dict[str, Any]) -> None:
        self.X = np.asarray(s["X"], dtype=np.float64)
        self.ts = np.asarray(s["ts"], dtype=np.float64)
        self.margin = np.asarray(s["margin"], dtype=np.float64)
        self.event_ids = list(s["event_ids"])
        self.client_ids = list(s["client_ids"])
        self.prediction = list(s["prediction"])


class CappedReference:
    """Collects a reference of ``size`` events in which no caller holds more than ``cap`` of them.

    Production traffic is dominated by a few heavy callers (batch jobs with their own class mix, a
    busy partner): a reference of the first events would let them define "normal". Events of a
    caller that already holds ``cap`` reference rows are skipped (kept aside, at most ``size`` of
    them, in stream order). Events without ``client_id`` count as distinct callers. If the
    reference is still short after ``patience`` events (a stream with very few callers), it is
    completed with the earliest skipped events. Decided event by event in stream order, so the
    result does not depend on batch boundaries. Bounded: at most ``2 * size`` rows.
    """

    def __init__(self, size: int, n_features: int, cap: int, patience: int) -> None:
        self.size = int(size)
        self.cap = max(1, int(cap))
        self.patience = max(int(patience), self.size)
        self.d = n_features
        self.X = np.empty((0, n_features))
        self.margin = np.empty(0)
        self.ts = np.empty(0)
        self.pos = np.empty(0, dtype=np.int64)  # position among the events seen, for ordering
        self.key = np.empty(0, dtype=np.int64)  # caller key per row (see caller_key)
        self.oX = np.empty((0, n_features))
        self.omargin = np.empty(0)
        self.ots = np.empty(0)
        self.opos = np.empty(0, dtype=np.int64)
        self.okey = np.empty(0, dtype=np.int64)
        self.counts: dict[str, int] = {}
        self.seen = 0
        self.first_event: str | None = None

    @property
    def n(self) -> int:
        return len(self.X)

    def add(self, batch: EventBatch, start: int = 0) -> int | None:
        """Offer rows ``start:`` of ``batch``; returns the row at which the reference completed
        (it is included), or None while it is incomplete."""
        take, over, tpos, opos, tkey, okey = [], [], [], [], [], []
        done: int | None = None
        n_adm, n_over = self.n, len(self.oX)
        counts = self.counts
        for i in range(start, len(batch)):
            cid = batch.client_ids[i]
            if self.first_event is None:
                self.first_event = batch.event_ids[i]
            k = counts.get(cid, 0) if cid is not None else 0
            if k < self.cap:
                if cid is not None:
                    counts[cid] = k + 1
                take.append(i)
                tpos.append(self.seen)
                tkey.append(caller_key(cid, self.seen))
                n_adm += 1
            elif n_over < self.size:
                over.append(i)
                opos.append(self.seen)
                okey.append(caller_key(cid, self.seen))
                n_over += 1
            self.seen += 1
            if n_adm >= self.size or self.seen >= self.patience:
                done = i
                break
        if take:
            t = np.array(take)
            self.X = np.concatenate([self.X, batch.X[t]])
            self.margin = np.concatenate([self.margin, batch.margin[t]])
            self.ts = np.concatenate([self.ts, batch.ts[t]])
            self.pos = np.concatenate([self.pos, np.array(tpos, dtype=np.int64)])
            self.key = np.concatenate([self.key, np.array(tkey, dtype=np.int64)])
        if over:
            o = np.array(over)
            self.oX = np.concatenate([self.oX, batch.X[o]])
            self.omargin = np.concatenate([self.omargin, batch.margin[o]])
            self.ots = np.concatenate([self.ots, batch.ts[o]])
            self.opos = np.concatenate([self.opos, np.array(opos, dtype=np.int64)])
            self.okey = np.concatenate([self.okey, np.array(okey, dtype=np.int64)])
        return done

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, margin, ts)`` of the reference in stream order (short ones filled from skipped rows)."""
        X, mg, ts, pos = self.X, self.margin, self.ts, self.pos
        short = self.size - len(X)
        if short > 0 and len(self.oX):
            X = np.concatenate([X, self.oX[:short]])
            mg = np.concatenate([mg, self.omargin[:short]])
            ts = np.concatenate([ts, self.ots[:short]])
            pos = np.concatenate([pos, self.opos[:short]])
        o = np.argsort(pos, kind="stable")
        return X[o], mg[o], ts[o]

    def caller_keys(self) -> np.ndarray:
        """Caller key (:func:`caller_key`) of every row of :meth:`arrays`, in the same order."""
        key, pos = self.key, self.pos
        short = self.size - len(key)
        if short > 0 and len(self.okey):
            key = np.concatenate([key, self.okey[:short]])
            pos = np.concatenate([pos, self.opos[:short]])
        return key[np.argsort(pos, kind="stable")]  # type: ignore[no-any-return]

    def distinct_callers(self) -> int:
        return len(self.counts)

    def state(self) -> dict[str, Any]:
        return {
            "X": self.X.copy(), "margin": self.margin.copy(), "ts": self.ts.copy(), "pos": self.pos.copy(),
            "key": self.key.copy(), "okey": self.okey.copy(), "oX": self.oX.copy(), "omargin": self.omargin.copy(), "ots": self.ots.copy(), "opos": self.opos.copy(),
            "callers": list(self.counts), "counts": np.array(list(self.counts.values()), dtype=np.int64),
            "seen": self.seen, "first_event": self.first_event,
        }

    def load(self, s: dict[str, Any]) -> None:
        f = np.float64
        self.X = np.asarray(s["X"], dtype=f).reshape(-1, self.d)
        self.margin, self.ts = np.asarray(s["margin"], dtype=f), np.asarray(s["ts"], dtype=f)
        self.pos = np.asarray(s["pos"], dtype=np.int64)
        self.oX = np.asarray(s["oX"], dtype=f).reshape(-1, self.d)
        self.omargin, self.ots = np.asarray(s["omargin"], dtype=f), np.asarray(s["ots"], dtype=f)
        self.opos = np.asarray(s["opos"], dtype=np.int64)
        # snapshots from before caller keys: every row its own caller
        self.key = np.asarray(s["key"], dtype=np.int64) if "key" in s else -1 - self.pos
        self.okey = np.asarray(s["okey"], dtype=np.int64) if "okey" in s else -1 - self.opos
        self.counts = dict(zip(s["callers"], np.asarray(s["counts"]).tolist(), strict=True))
        self.seen = int(s["seen"])
        self.first_event = s["first_event"]


# --------------------------------------------------------------------------------------------
# robust scaling, subspace model, calibration
# --------------------------------------------------------------------------------------------


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and a floored robust scale (IQR/1.349, at least half the std).

    Constant features get a small floor (1e-3 of the median feature scale) so that any movement
    off a value that never varied in the reference stands out, without dividing by zero.
    """
    X = np.asarray(X, dtype=np.float64)
    with warnings.catch_warnings():  # an all-missing feature gets NaN here, replaced just below
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmedian(X, axis=0)
        q75, q25 = np.nanpercentile(X, [75, 25], axis=0)
        scale = np.maximum((q75 - q25) / 1.349, 0.5 * np.nanstd(X, axis=0))
    center = np.where(np.isfinite(center), center, 0.0)
    scale = np.where(np.isfinite(scale), scale, 0.0)
    pos = scale[scale > 0]
    floor = 1e-3 * (float(np.median(pos)) if pos.size else 1.0)
    return center, np.maximum(scale, max(floor, 1e-12))


def standardise(X: np.ndarray, center: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    """``(X - center) / scale`` with NaN (missing) mapped to 0 and values clipped to +-clip."""
    Z = (X - center) / scale
    np.clip(Z, -clip, clip, out=Z)  # +-inf to +-clip (as nan_to_num would, for less work)
    np.copyto(Z, 0.0, where=np.isnan(Z))
    return Z


def tail_threshold(scores: np.ndarray, fpr: float, tail: float = 0.1) -> float:
    """Threshold exceeded by a fraction ``fpr`` of future scores like ``scores``.

    Above the ``1 - tail`` quantile ``u`` the excesses are modelled by a generalised Pareto
    distribution (peaks over threshold) whose shape ``xi`` and scale are estimated by probability-
    weighted moments (Hosking & Wallis, 1987). ``xi`` is kept in ``[0, 0.5]``: never lighter than
    exponential (a short-tailed fit on a few hundred excesses would put the threshold too low) and
    never so heavy that one outlier of the reference sets it. Small budgets such as 1e-3 are so
    extrapolated from the top 10% of the held-out scores instead of read off their last order
    statistic.

    >>> rng = np.random.default_rng(0)
    >>> round(tail_threshold(rng.exponential(size=20000), 1e-3), 1)  # exact: ln(1000) = 6.9
    6.9
    >>> round(tail_threshold(rng.pareto(4.0, size=20000), 1e-3), 1)  # exact: 1000**0.25 - 1 = 4.6
    4.7
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("inf")
    if fpr >= tail:
        return float(np.quantile(s, 1.0 - fpr))
    u = float(np.quantile(s, 1.0 - tail))
    y = s[s > u] - u
    if y.size < 5:
        return u + (float(y.mean()) if y.size else 0.0) * float(np.log(tail / fpr))
    n = y.size
    a0 = float(y.mean())
    p = (np.arange(1, n + 1) - 0.35) / n
    a1 = float(np.mean((1.0 - p) * y))
    den = a0 - 2.0 * a1
    xi = 2.0 - a0 / den if den > 0 else 0.5
    xi = min(max(xi, 0.0), 0.5)
    sigma = a0 * (1.0 - xi)  # mean excess = sigma / (1 - xi)
    r = tail / fpr
    return u + (sigma * float(np.log(r)) if xi < 1e-6 else sigma / xi * (r**xi - 1.0))


@dataclass
class Marginals:
    """Per-feature monotone transforms learned on the reference (heavy tails made Gaussian-like).

    Amounts, counts, durations and ratios in natural units are log-normal-like: a few benign values
    lie 20 robust standard deviations from the median, and a squared-distance statistic is then
    dominated by one ordinary feature. A feature whose reference has a heavy *upper* tail (the
    distance from median to 99th percentile more than ``ratio`` times that from 1st percentile to
    median) is mapped to ``log(x + s)``: ``s = 0`` when all its reference values are positive (so
    products and ratios of features stay exact linear relations, as for log-normal data), else the
    smallest shift that makes the reference's 5% quantile (or a quarter of its median) positive. Below
    the reference minimum ``k`` the map continues linearly with the same slope, so values under the
    reference's range still move away. A heavy *lower* tail is mirrored. Other features (light-tailed,
    bounded, or sitting on one value most of the time, such as blank pixels) are left as they are.
    Monotone, so the order of values - and of departures - is kept.
    """

    idx: np.ndarray  # transformed features
    sign: np.ndarray  # +1 heavy upper tail, -1 heavy lower tail
    shift: np.ndarray  # s (in the tail's direction)
    knot: np.ndarray  # k (in the tail's direction): linear below

    @staticmethod
    def fit(X: np.ndarray, ratio: float = 2.5) -> Marginals:
        idx, sign, shifts, knots = [], [], [], []
        for j in range(X.shape[1]):
            col = X[:, j]
            col = col[np.isfinite(col)]
            if col.size < 20:
                continue
            lo, q50, hi = np.quantile(col, [0.01, 0.5, 0.99])
            up, down = hi - q50, q50 - lo
            for sg, a, b in ((1.0, up, down), (-1.0, down, up)):
                if a > ratio * b and a > 0:
                    v = sg * col  # the heavy tail points up
                    k = float(v.min())
                    q05, m50 = np.quantile(v, [0.05, 0.5])
                    if k > 0:
                        sh = 0.0
                    else:
                        c = max(float(q05 - k), 0.25 * float(m50 - k))
                        if c <= 0:
                            break
                        sh = c - k
                    idx.append(j)
                    sign.append(sg)
                    shifts.append(sh)
                    knots.append(k)
                    break
        return Marginals(np.array(idx, dtype=np.int64), np.array(sign), np.array(shifts), np.array(knots))

    def apply(self, X: np.ndarray) -> np.ndarray:
        if self.idx.size == 0:
            return X
        X = np.array(X, dtype=np.float64, copy=True)
        V = X[:, self.idx] * self.sign
        base = self.knot + self.shift  # > 0
        with np.errstate(invalid="ignore"):
            T = np.where(V >= self.knot, np.log(np.maximum(V, self.knot) + self.shift),
                         np.log(base) + (V - self.knot) / base)
        X[:, self.idx] = T * self.sign
        return X

    def state(self) -> dict[str, Any]:
        return {"idx": self.idx, "sign": self.sign, "shift": self.shift, "knot": self.knot}

    @staticmethod
    def load(s: dict[str, Any]) -> Marginals:
        f = np.float64
        return Marginals(np.asarray(s["idx"], dtype=np.int64), np.asarray(s["sign"], dtype=f),
                         np.asarray(s["shift"], dtype=f), np.asarray(s["knot"], dtype=f))


@dataclass
class SubspaceModel:
    """Marginal transforms + robust standardisation + a whitened PCA basis fitted on reference events.

    Features first go through :class:`Marginals` (heavy tails to log scale), then a robust
    standardisation (median, IQR). The standardised input is rotated onto the reference's principal
    axes and each axis is divided by its standard deviation (floored at ``min_variance`` times the
    mean eigenvalue, so directions the reference hardly uses count a lot but not infinitely). Three
    statistics per event, each divided by its own threshold (see the last paragraph):

    * ``resid`` - mean squared whitened coordinate on the *minor* axes (beyond the ``k`` that keep
      ``var_kept`` of the variance): energy off the reference subspace, in directions natural
      data hardly varies in (a flat background, exact correlations between features);
    * ``maha`` - Mahalanobis distance per dimension on the ``k`` *major* axes: how atypical the
      input is along the directions natural data does vary in;
    * ``atoms`` - departures from point masses: a feature whose reference values sit on one exact
      value (an "atom": a blank background pixel, a zero count) at least half of the time
      contributes when the input is off that value, through two sums computed separately:
      ``near``, the surprisal ``-log q_near`` of a value in the band next to the atom (within half
      the median distance of the reference's off-atom values; ``q_near`` the reference share of
      such values) - the signature of a small perturbation of a natural input; and ``far``, the
      surprisal ``-log share`` of the departure's distance under a histogram of the reference's
      off-atom distances (16 equal bins up to the farthest, one bin beyond it), so a large
      departure to a value natural inputs rarely take is scored by how rare it is, not as an
      ordinary departure. Shares are floored at 0.5 / (half the reference). ``atoms`` is the
      larger of the two after division by their thresholds. Zero when the reference has no atoms.

    Each of the four statistics (resid, maha, near, far) gets a threshold for a false-positive
    rate of ``fpr / 4`` (a Bonferroni split of the budget: their tails differ a lot).
    Calibration is cross-fitted: the reference is split in two halves (alternate events); a model
    fitted on each half scores the other, and the threshold of each statistic is set on these
    out-of-sample scores (:func:`tail_threshold`). The model that scores the stream is fitted on the whole
    reference (its scores are, if anything, smaller than the half-models', so the calibration is
    conservative).
    """

    tf: Marginals
    center: np.ndarray
    scale: np.ndarray
    basis: np.ndarray  # (d, d): principal axes divided by their floored std
    k: int
    q_resid: float
    q_maha: float
    clip: float
    atom_idx: np.ndarray  # features with an atom
    atom_val: np.ndarray
    atom_w: np.ndarray  # (n_atoms, ATOM_BINS + 1): surprisal per distance bin (last: beyond the reference)
    atom_near_w: np.ndarray
    atom_delta: np.ndarray
    atom_width: np.ndarray  # (n_atoms,): width of the distance bins
    q_atoms: float = 1.0
    q_near: float = 1.0
    z_q99: np.ndarray | None = None  # per feature: reference 99% quantile of |standardised value|
    mask_w: np.ndarray | None = None  # (n_atoms + 1, n_atoms): auto-logistic weights of the departure pattern
    q_mask: float = 1.0

    @staticmethod
    def _fit_one(X: np.ndarray, var_kept: float, max_components: int, clip: float,
                 min_variance: float, floor_n: int) -> SubspaceModel:
        tf = Marginals.fit(X)
        Xt = tf.apply(X)
        center, scale = robust_scale(Xt)
        Z = standardise(Xt, center, scale, clip)
        mu = Z.mean(axis=0)
        _, s, vt = np.linalg.svd(Z - mu, full_matrices=False)  # U is never used: (n, d), not (n, n)
        d = Z.shape[1]
        var = np.zeros(d)
        var[: len(s)] = s**2 / max(len(Z) - 1, 1)
        frac = np.cumsum(var) / max(float(var.sum()), 1e-300)
        k = int(np.searchsorted(frac, var_kept) + 1)
        k = max(1, min(k, max_components, d - 1 if d > 1 else 1))
        floor = max(min_variance * float(var.mean()), 1e-12)
        at = _atoms(X, floor_n)
        B = _departures(X, at["atom_idx"], at["atom_val"])
        return SubspaceModel(
            tf=tf,
            center=center + mu * scale,  # fold the PCA mean into the centre
            scale=scale,
            basis=np.ascontiguousarray(vt.T / np.sqrt(np.maximum(var, floor))),
            k=k,
            q_resid=1.0,
            q_maha=1.0,
            clip=clip,
            z_q99=np.quantile(np.abs(Z), 0.99, axis=0),
            atom_idx=at["atom_idx"], atom_val=at["atom_val"], atom_w=at["atom_w"],
            atom_near_w=at["atom_near_w"], atom_delta=at["atom_delta"], atom_width=at["atom_width"],
            mask_w=fit_autologistic(B),
        )

    @staticmethod
    def fit(X: np.ndarray, var_kept: float, max_components: int, clip: float,
            fpr: float = 1e-3, min_variance: float = 0.01) -> tuple[SubspaceModel, np.ndarray]:
        """The model fitted on ``X`` and the cross-fitted held-out ``max`` scores of ``X``'s events."""
        X = np.asarray(X, dtype=np.float64)
        floor_n = max(len(X) // 2, 1)  # same probability floors for the half models and the final one
        model = SubspaceModel._fit_one(X, var_kept, max_components, clip, min_variance, floor_n)
        raw = [np.empty(len(X)) for _ in range(N_STATS)]
        for a, b in ((0, 1), (1, 0)):
            half = SubspaceModel._fit_one(X[a::2], var_kept, max_components, clip, min_variance, floor_n)
            for r, v in zip(raw, half.raw(X[b::2]), strict=True):
                r[b::2] = v
        r, m, near, far, mask = raw
        q = fpr / N_STATS
        model.q_resid = max(tail_threshold(r, q), 1e-12)
        model.q_maha = max(tail_threshold(m, q), 1e-12)
        # the atom statistics are discrete; floor their scales at one typical departure
        # (and, being discrete, never below the largest held-out value: see q_mask)
        top = (lambda v: float(np.nextafter(v.max(), np.inf))) if model.atom_idx.size else (lambda v: 1.0)
        model.q_near = max(tail_threshold(near, q), top(near),
                           float(np.median(model.atom_near_w)) if model.atom_idx.size else 1.0)
        model.q_atoms = max(tail_threshold(far, q), top(far),
                            float(np.median(model.atom_w[:, 0])) if model.atom_idx.size else 1.0)
        # the departure pattern's surprisal is discrete (with few atom features it takes a handful of
        # values, and a tail fit can put the threshold just under one that natural inputs reach): never
        # below the largest held-out value, nor below one unlikely departure (log 20)
        model.q_mask = (max(tail_threshold(mask, q), float(np.nextafter(mask.max(), np.inf)), float(np.log(20.0)))
                        if model.atom_idx.size else 1.0)
        held = np.maximum(np.maximum(r / model.q_resid, m / model.q_maha),
                          np.maximum(np.maximum(near / model.q_near, far / model.q_atoms), mask / model.q_mask))
        return model, held

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardised inputs (after the marginal transforms), before rotation."""
        return standardise(self.tf.apply(X), self.center, self.scale, self.clip)

    def raw(self, X: np.ndarray, Z: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(resid, maha, atoms_near, atoms_far, pattern)`` before division by their thresholds
        (``Z``: ``self.transform(X)`` if the caller has it already)."""
        if Z is None:
            Z = self.transform(X)
        T = Z @ self.basis
        T *= T
        d, k = T.shape[1], self.k
        maha = T[:, :k].sum(axis=1) / k
        resid = T[:, k:].sum(axis=1) / max(d - k, 1)
        if self.atom_idx.size:
            V = X[:, self.atom_idx]
            dist = np.abs(V - self.atom_val)
            off = (dist > 0) & ~np.isnan(V)
            near = off & (dist <= self.atom_delta)
            a_near = near.astype(np.float64) @ self.atom_near_w
            # surprisal of the departure's distance bin (equal-width bins up to the farthest
            # reference departure; beyond it, the floor)
            w = self.atom_width
            b = np.minimum(dist / w, ATOM_BINS).astype(np.int64)
            b = np.where(dist > w * ATOM_BINS, ATOM_BINS, np.minimum(b, ATOM_BINS - 1))
            sur = self.atom_w.ravel()[self._atom_base + b]
            a_far = np.where(off, sur, 0.0).sum(axis=1)
            pattern = autologistic_surprisal(off, self.mask_w)
        else:
            a_near = a_far = pattern = np.zeros(len(X))
        return resid, maha, a_near, a_far, pattern

    @property
    def _atom_base(self) -> np.ndarray:
        return np.arange(self.atom_w.shape[0], dtype=np.int64) * (ATOM_BINS + 1)

    def scores(self, X: np.ndarray, Z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(resid, maha, atoms)`` each divided by its threshold (``atoms``: the largest of near, far
        and pattern); ``Z`` as for :meth:`raw`."""
        r, m, near, far, pat = self.raw(X, Z)
        return (r / self.q_resid, m / self.q_maha,
                np.maximum(np.maximum(near / self.q_near, far / self.q_atoms), pat / self.q_mask))

    def state(self) -> dict[str, Any]:
        return {
            "tf": self.tf.state(),
            "center": self.center, "scale": self.scale, "basis": self.basis, "k": self.k,
            "q_resid": self.q_resid, "q_maha": self.q_maha, "clip": self.clip,
            "atom_idx": self.atom_idx, "atom_val": self.atom_val, "atom_w": self.atom_w,
            "atom_near_w": self.atom_near_w, "atom_delta": self.atom_delta, "atom_width": self.atom_width,
            "q_atoms": self.q_atoms, "q_near": self.q_near, "z_q99": self.z_q99,
            "mask_w": self.mask_w, "q_mask": self.q_mask,
        }

    @staticmethod
    def load(s: dict[str, Any]) -> SubspaceModel:
        return SubspaceModel(
            tf=Marginals.load(s["tf"]),
            center=np.asarray(s["center"], dtype=np.float64),
            scale=np.asarray(s["scale"], dtype=np.float64),
            basis=np.asarray(s["basis"], dtype=np.float64),
            k=int(s["k"]), q_resid=float(s["q_resid"]), q_maha=float(s["q_maha"]), clip=float(s["clip"]),
            atom_idx=np.asarray(s["atom_idx"], dtype=np.int64),
            atom_val=np.asarray(s["atom_val"], dtype=np.float64),
            atom_w=np.asarray(s["atom_w"], dtype=np.float64),
            atom_near_w=np.asarray(s["atom_near_w"], dtype=np.float64),
            atom_delta=np.asarray(s["atom_delta"], dtype=np.float64),
            atom_width=np.asarray(s["atom_width"], dtype=np.float64),
            q_atoms=float(s["q_atoms"]), q_near=float(s["q_near"]),
            z_q99=np.asarray(s["z_q99"], dtype=np.float64),
            mask_w=np.asarray(s["mask_w"], dtype=np.float64), q_mask=float(s["q_mask"]),
        )


#: equal-width distance bins per atom feature for the departure surprisal
ATOM_BINS = 16
#: statistics that share the per-event budget (resid, maha, near, far, pattern)
N_STATS = 5


def _departures(X: np.ndarray, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Boolean ``(n, n_atoms)``: which atom features an input has moved off their atom (NaN = not)."""
    V = X[:, idx]
    return (V != val) & ~np.isnan(V)


def fit_autologistic(B: np.ndarray, lam: float = 3.0, iters: int = 8) -> np.ndarray:
    """Weights of an auto-logistic (dependency-network) model of a binary departure pattern.

    For every atom feature ``j`` an L2-penalised logistic regression predicts "off its atom" from
    which of the *other* atom features are off theirs (Newton steps, penalty ``lam`` on the slopes).
    Returns ``W`` of shape ``(m + 1, m)``: column ``j`` holds the slopes (``W[j, j] = 0``) and the
    intercept in the last row. Natural departures come in patterns (a stroke inks neighbouring
    pixels, related counts move together); a perturbation that lifts many scattered atoms at once
    is improbable under every conditional, whatever its size.
    """
    B = np.asarray(B, dtype=np.float64)
    n, m = B.shape
    W = np.zeros((m + 1, m))
    if m == 0 or n == 0:
        return W
    A = np.hstack([B, np.ones((n, 1))])
    for j in range(m):
        keep = np.ones(m + 1, dtype=bool)
        keep[j] = False
        Aj = A[:, keep]
        pen = np.full(m, lam)
        pen[-1] = 1e-6  # the intercept is (almost) not penalised
        w = np.zeros(m)
        y = B[:, j]
        for _ in range(iters):
            p = 1.0 / (1.0 + np.exp(-np.clip(Aj @ w, -30.0, 30.0)))
            g = Aj.T @ (p - y) + pen * w
            H = (Aj * (p * (1.0 - p) + 1e-9)[:, None]).T @ Aj + np.diag(pen)
            w = w - np.linalg.solve(H, g)
        W[keep, j] = w
    return W


def autologistic_surprisal(off: np.ndarray, W: np.ndarray | None) -> np.ndarray:
    """Pseudo-likelihood surprisal ``sum_j -log P(off_j | off_-j)`` of departure patterns."""
    if W is None or off.shape[1] == 0:
        return np.zeros(off.shape[0])
    B = off.astype(np.float64)
    L = B @ W[:-1] + W[-1]
    return np.logaddexp(0.0, np.where(off, -L, L)).sum(axis=1)  # type: ignore[no-any-return]


def _atoms(X: np.ndarray, floor_n: int, min_share: float = 0.5) -> dict[str, np.ndarray]:
    """Features whose most frequent exact value holds at least ``min_share`` of the reference.

    Per such feature: the atom; the near band ``delta`` (half the median off-atom distance) and the
    surprisal of a value in it, ``-log q_near``; and a histogram of the off-atom distances in
    ``ATOM_BINS`` equal-width bins up to the farthest one, as surprisals ``-log share`` (plus one
    bin beyond the farthest). Shares are floored at ``0.5 / floor_n``.
    """
    idx, val, wn, dl, wd, wb = [], [], [], [], [], []
    floor = 0.5 / floor_n
    for j in range(X.shape[1]):
        col = X[:, j]
        col = col[~np.isnan(col)]
        if col.size == 0:
            continue
        u, c = np.unique(col, return_counts=True)
        p = c.max() / col.size
        if p >= min_share:
            a = float(u[np.argmax(c)])
            idx.append(j)
            val.append(a)
            off = np.abs(col[col != a] - a)
            delta = 0.5 * float(np.median(off)) if off.size else 0.0
            dl.append(delta)
            wn.append(-np.log(max(float((off <= delta).sum()) / col.size if off.size else 0.0, floor)))
            width = float(off.max()) / ATOM_BINS if off.size else 1.0
            cnt = (np.bincount(np.minimum((off / width).astype(np.int64), ATOM_BINS - 1), minlength=ATOM_BINS)
                   if off.size else np.zeros(ATOM_BINS))
            share = np.maximum(np.append(cnt / col.size, 0.0), floor)
            wd.append(width)
            wb.append(-np.log(share))
    return {
        "atom_idx": np.array(idx, dtype=np.int64),
        "atom_val": np.array(val, dtype=np.float64),
        "atom_w": np.array(wb, dtype=np.float64).reshape(-1, ATOM_BINS + 1),
        "atom_near_w": np.array(wn, dtype=np.float64),
        "atom_delta": np.array(dl, dtype=np.float64),
        "atom_width": np.array(wd, dtype=np.float64),
    }


# --------------------------------------------------------------------------------------------
# per-caller slots
# --------------------------------------------------------------------------------------------


@dataclass
class Layout:
    """A batch's events grouped by caller slot (stable, so stream order holds inside a group).

    ``order`` maps sorted position -> batch row; ``slot``/``rank``/``start`` are per sorted
    position (its caller's slot, its index among the caller's events in this batch, and the
    sorted position of the caller's first event); ``size`` is the caller's event count here.
    """

    order: np.ndarray
    slot: np.ndarray
    rank: np.ndarray
    start: np.ndarray
    size: np.ndarray
    group_starts: np.ndarray
    group_slots: np.ndarray
    group_sizes: np.ndarray


def make_layout(slots: np.ndarray) -> Layout:
    order = np.argsort(slots, kind="stable")
    s = slots[order]
    n = len(s)
    if n == 0:
        z = np.empty(0, dtype=np.int64)
        return Layout(z, z, z, z, z, z, z, z)
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    np.not_equal(s[1:], s[:-1], out=brk[1:])
    gstarts = np.flatnonzero(brk)
    gsizes = np.diff(np.append(gstarts, n))
    start = np.repeat(gstarts, gsizes)
    rank = np.arange(n) - start
    return Layout(order, s, rank, start, np.repeat(gsizes, gsizes), gstarts, s[gstarts], gsizes)


@dataclass
class Window:
    """For every sorted event, where its caller's previous ``K`` items live (oldest first).

    ``index`` points into a *pool*: the rings of the batch's callers (``K`` rows per caller, in
    group order) followed by the batch's own values in sorted order; ``valid`` marks items that
    exist (a caller with fewer than ``K`` earlier items has invalid leading entries).
    """

    index: np.ndarray
    valid: np.ndarray
    K: int

    def gather(self, ring: np.ndarray, batch_vals: np.ndarray, lay: Layout,
               dtype: Any = None) -> np.ndarray:
        tail = ring.shape[2:]
        G, K = len(lay.group_slots), ring.shape[1]
        pool = np.empty((G * K + len(batch_vals), *tail), dtype=ring.dtype)
        np.take(ring, lay.group_slots, axis=0, out=pool[: G * K].reshape(G, K, *tail))
        pool[G * K:] = batch_vals.reshape(-1, *tail)
        if dtype is not None and len(pool) <= self.index.size:  # convert the smaller of pool and window
            pool = pool.astype(dtype)
            dtype = None
        if tail:
            # one opaque item per row: a 1-D take is several times faster than fancy indexing rows
            row = np.dtype((np.void, pool.itemsize * int(np.prod(tail))))
            out = np.take(pool.reshape(len(pool), -1).view(row).ravel(), self.index)
            out = out.view(pool.dtype).reshape(*self.index.shape, *tail)
        else:
            out = np.take(pool, self.index)
        return out if dtype is None else out.astype(dtype, copy=False)


def window_index(lay: Layout, head: np.ndarray, length: np.ndarray, K: int,
                 sel: np.ndarray | None = None, last: int | None = None) -> Window:
    """Pool indices of sorted events' windows of their caller's previous ``K`` items.

    With ``c = 0..K-1`` the window column, an event of rank ``r`` whose caller's ring holds
    ``L`` items with write position ``h`` sees ring item ``(h + r + c) mod K`` while
    ``c < K - r`` and otherwise its own batch's item ``start + r - K + c``; the column is valid
    when ``c >= K - r - L``. ``sel`` restricts the rows to some sorted positions and ``last``
    keeps only the newest ``last`` columns (the pool is the same either way).
    """
    G = len(lay.group_slots)
    # int32 throughout (pool positions < G * K + n): half the memory traffic of int64
    i4 = np.int32
    c = np.arange(K - (last or K), K, dtype=i4)[None, :]
    gi = np.repeat(np.arange(G, dtype=i4), lay.group_sizes)
    slot, r, start = lay.slot, lay.rank.astype(i4), lay.start.astype(i4)
    if sel is not None:
        slot, r, start, gi = slot[sel], r[sel], start[sel], gi[sel]
    a = ((head[slot].astype(i4) + r) % K)[:, None] + c
    a -= K * (a >= K)
    a += (gi * K)[:, None]
    from_ring = c < (K - r)[:, None]
    # outside the ring part, c >= K - r: the caller's earlier events of this batch, always in the pool
    b = (G * K + start + r - K)[:, None] + c
    index = np.where(from_ring, a, b)
    valid = c >= (K - r - length[slot].astype(i4))[:, None]
    return Window(index, valid, K)


def ring_write(ring: np.ndarray, batch_vals: np.ndarray, lay: Layout, head: np.ndarray, K: int) -> None:
    """Append every caller's events of this batch (sorted order) to its ring (last ``K`` kept)."""
    keep = lay.rank >= lay.size - K
    pos = (head[lay.slot[keep]].astype(np.int64) + lay.rank[keep]) % K
    ring[lay.slot[keep], pos] = batch_vals[keep]


def ring_advance(head: np.ndarray, length: np.ndarray, lay: Layout, K: int) -> None:
    gs, gn = lay.group_slots, lay.group_sizes
    head[gs] = (head[gs].astype(np.int64) + gn) % K
    length[gs] = np.minimum(length[gs].astype(np.int64) + gn, K)


def _grown(a: np.ndarray, rows: int, fill: Any) -> np.ndarray:
    """``a`` with ``rows`` rows, the new ones set to ``fill``. In place (``realloc``: a large block is
    remapped, not copied, so the old and the new table never coexist) when ``a`` owns its data and
    the caller passed its only reference (popped from its container); otherwise a copy.

    >>> a = np.arange(3.0)
    >>> _grown(a, 5, -1.0).tolist()
    [0.0, 1.0, 2.0, -1.0, -1.0]
    """
    n = len(a)
    try:
        a.resize((rows, *a.shape[1:]), refcheck=True)
    except ValueError:  # a view, or referenced elsewhere
        return np.concatenate([a, np.full((rows - n, *a.shape[1:]), fill, dtype=a.dtype)])
    a[n:] = fill
    return a


class CallerTable:
    """Maps ``client_id`` to a row ("slot") of per-caller numpy arrays, with bounded memory.

    * ``fields`` declares the per-caller arrays: name -> (trailing shape, dtype, fill value).
      Rows are allocated geometrically up to ``max_callers``.
    * A caller idle for more than ``ttl`` seconds of event time (``protected_ttl`` if the
      detector marked it protected, i.e. suspicious) starts afresh on its next event: this is
      decided per event, so it does not depend on batch boundaries.
    * When all ``max_callers`` rows are live, the least recently active unprotected callers are
      evicted (1/16 of the table at a time); protected callers go only if nothing else is left.
      This capacity eviction is the one place where batch boundaries can matter; it does not
      happen while fewer than ``max_callers`` callers are active within the TTL.
    """

    def __init__(self, max_callers: int, ttl: float, protected_ttl: float,
                 fields: dict[str, tuple[tuple[int, ...], Any, Any]],
                 on_reset: Callable[[np.ndarray], None] | None = None) -> None:
        self.on_reset = on_reset
        self.max_callers = int(max_callers)
        self.ttl = float(ttl)
        self.protected_ttl = float(protected_ttl)
        self.fields = fields
        self.index: dict[str, int] = {}
        self.keys: list[str | None] = []
        self.free: list[int] = []
        self.evicted = 0
        cap = min(1024, self.max_callers)
        self.last_ts = np.full(cap, -np.inf)
        self.protected = np.zeros(cap, dtype=bool)
        self.arrays: dict[str, np.ndarray] = {
            name: np.full((cap, *shape), fill, dtype=dtype) for name, (shape, dtype, fill) in fields.items()
        }

    @property
    def capacity(self) -> int:
        return len(self.last_ts)

    def _grow(self, need: int) -> None:
        cap = self.capacity
        new = min(self.max_callers, max(cap * 2, need))
        if new <= cap:
            return
        # each array is handed over as its only reference, so that it can grow in place
        self.last_ts = _grown(vars(self).pop("last_ts"), new, -np.inf)
        self.protected = _grown(vars(self).pop("protected"), new, False)
        for name, (_, _, fill) in self.fields.items():
            self.arrays[name] = _grown(self.arrays.pop(name), new, fill)

    def reset(self, slots: np.ndarray) -> None:
        for name, (_, _, fill) in self.fields.items():
            self.arrays[name][slots] = fill
        self.protected[slots] = False
        self.last_ts[slots] = -np.inf
        if self.on_reset is not None:
            self.on_reset(np.asarray(slots, dtype=np.int64))

    def _evict(self, n_needed: int, busy: set[int]) -> None:
        live = np.array(sorted(self.index.values()), dtype=np.int64)
        if live.size == 0:
            return
        mask = np.array([s not in busy for s in live.tolist()]) if busy else np.ones(live.size, bool)
        cand = live[mask]
        n_evict = min(cand.size, max(n_needed, self.max_callers // 16, 1))
        if n_evict <= 0:
            raise RuntimeError("caller table full with callers of the current batch")
        # unprotected first, then least recently active; ties broken by slot for determinism
        key = np.lexsort((cand, self.last_ts[cand], self.protected[cand]))
        victims = cand[key[:n_evict]]
        for s in victims.tolist():
            k = self.keys[s]
            if k is not None:
                del self.index[k]
            self.keys[s] = None
            self.free.append(s)
        self.reset(victims)
        self.evicted += int(victims.size)

    def assign(self, callers: list[str], first_ts: np.ndarray) -> np.ndarray:
        """Slots of ``callers`` (distinct), creating rows as needed; expired callers are reset."""
        slots = np.array(list(map(self.index.get, callers, itertools.repeat(-1))), dtype=np.int64)
        known = slots >= 0
        new = np.flatnonzero(~known).tolist()
        if known.any():
            ks = slots[known]
            ttl = np.where(self.protected[ks], self.protected_ttl, self.ttl)
            expired = ks[first_ts[known] - self.last_ts[ks] > ttl]
            if expired.size:
                self.reset(expired)
        if len(callers) > self.max_callers:
            raise ValueError(
                f"a batch holds {len(callers)} distinct callers, more than max_callers={self.max_callers}"
            )
        if new:
            n_free_rows = len(self.free) + (self.capacity - len(self.keys))
            if n_free_rows < len(new):
                self._grow(len(self.keys) + len(new))
                n_free_rows = len(self.free) + (self.capacity - len(self.keys))
                if n_free_rows < len(new):
                    self._evict(len(new) - n_free_rows, set(slots[known].tolist()))
            for i in new:
                if self.free:
                    s = self.free.pop()
                    self.keys[s] = callers[i]
                else:
                    s = len(self.keys)
                    self.keys.append(callers[i])
                self.index[callers[i]] = s
                slots[i] = s
        return slots

    def state(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "free": list(self.free),
            "evicted": self.evicted,
            "last_ts": self.last_ts.copy(),
            "protected": self.protected.copy(),
            "arrays": {k: v.copy() for k, v in self.arrays.items()},
        }

    def load(self, s: dict[str, Any]) -> None:
        self.keys = list(s["keys"])
        self.index = {k: i for i, k in enumerate(self.keys) if k is not None}
        self.free = [int(v) for v in s["free"]]
        self.evicted = int(s["evicted"])
        self.last_ts = np.asarray(s["last_ts"], dtype=np.float64).copy()
        self.protected = np.asarray(s["protected"], dtype=bool).copy()
        self.arrays = {
            name: np.asarray(s["arrays"][name], dtype=dtype).copy()
            for name, (_, dtype, _) in self.fields.items()
        }

    def nbytes(self) -> int:
        return int(self.last_ts.nbytes + self.protected.nbytes + sum(a.nbytes for a in self.arrays.values()))


def caller_key(client_id: str | None, position: int) -> int:
    """A stable non-negative key of a caller (CRC-32 of its id), or ``-1 - position`` for an event
    without ``client_id`` (each such event its own caller). Equal ids give equal keys in every
    process; a collision of two callers only merges them where keys are compared.

    >>> caller_key("acct-1", 0) == caller_key("acct-1", 9), caller_key(None, 4)
    (True, -5)
    """
    return zlib.crc32(client_id.encode()) if client_id is not None else -1 - position


def caller_codes(client_ids: list[str | None]) -> tuple[np.ndarray, list[str]]:
    """Per-event index into the batch's distinct callers (-1 where there is no ``client_id``)."""
    distinct = list(dict.fromkeys(client_ids))
    index = {c: i for i, c in enumerate(distinct)}
    codes = np.fromiter(map(index.__getitem__, client_ids), dtype=np.int64, count=len(client_ids))
    if None in index:
        k = index[None]
        codes = np.where(codes == k, -1, np.where(codes > k, codes - 1, codes))
        distinct.pop(k)
    return codes, distinct  # type: ignore[return-value]


def first_occurrences(codes: np.ndarray) -> np.ndarray:
    """Position of each code's first event, for codes numbered by first appearance (as from
    :func:`caller_codes`, ``-1`` rows removed): ``np.unique(codes, return_index=True)[1]`` without
    the sort.

    >>> first_occurrences(np.array([0, 1, 0, 2, 1, 3])).tolist()
    [0, 1, 3, 5]
    """
    top = np.maximum.accumulate(codes)
    return np.flatnonzero(np.diff(top, prepend=-1) > 0)


def group_first(values: np.ndarray, lay: Layout, mask: np.ndarray) -> np.ndarray:
    """Per sorted group, the sorted position of the first event with ``mask`` (or -1)."""
    pos = np.where(mask, np.arange(len(mask)), np.iinfo(np.int64).max)
    if len(pos) == 0:
        return np.empty(0, dtype=np.int64)
    first = np.minimum.reduceat(pos, lay.group_starts)
    return np.where(first == np.iinfo(np.int64).max, -1, first)
