"""Shared machinery of the attack detectors: warm-up buffering, robust subspace scoring,
tail calibration, per-caller slot tables with bounded memory, and ring-buffer gathers.

Everything here is vectorised over a micro-batch. Per-caller sequential semantics are kept by
sorting a batch's events by caller slot (stable, so stream order is kept inside a caller) and
computing, for every event, the indices of the items that a one-event-at-a-time run would have
seen: the tail of the caller's stored ring plus the caller's earlier events in the same batch.
"""

from __future__ import annotations

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


# --------------------------------------------------------------------------------------------
# robust scaling, subspace model, calibration
# --------------------------------------------------------------------------------------------


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and a floored robust scale (IQR/1.349, at least half the std).

    Constant features get a small floor (1e-3 of the median feature scale) so that any movement
    off a value that never varied in the reference stands out, without dividing by zero.
    """
    X = np.asarray(X, dtype=np.float64)
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
    Z = np.nan_to_num(Z, nan=0.0, posinf=clip, neginf=-clip)
    np.clip(Z, -clip, clip, out=Z)
    return Z


def tail_threshold(scores: np.ndarray, fpr: float, tail: float = 0.1) -> float:
    """Threshold exceeded by a fraction ``fpr`` of future scores like ``scores``.

    Above the ``1 - tail`` quantile ``u`` the excesses are modelled as exponential (a
    peaks-over-threshold fit), so small budgets such as 1e-3 are extrapolated from the top 10%
    of a few hundred held-out scores instead of read off their last order statistic.

    >>> rng = np.random.default_rng(0)
    >>> round(tail_threshold(rng.exponential(size=20000), 1e-3), 1)  # exact: ln(1000) = 6.9
    6.9
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if fpr >= tail:
        return float(np.quantile(s, 1.0 - fpr))
    u = float(np.quantile(s, 1.0 - tail))
    excess = s[s > u] - u
    mean_excess = float(excess.mean()) if excess.size else 0.0
    return u + mean_excess * float(np.log(tail / fpr))


@dataclass
class SubspaceModel:
    """Robust standardisation + a whitened PCA basis fitted on reference events.

    The standardised input is rotated onto the reference's principal axes and each axis is
    divided by its standard deviation (floored at ``min_variance`` times the mean eigenvalue, so
    directions the reference hardly uses count a lot but not infinitely). Three statistics per
    event, each divided by its own held-out threshold (see the last paragraph):

    * ``resid`` - mean squared whitened coordinate on the *minor* axes (beyond the ``k`` that keep
      ``var_kept`` of the variance): energy off the reference subspace, in directions natural
      data hardly varies in (a flat background, exact correlations between features);
    * ``maha`` - Mahalanobis distance per dimension on the ``k`` *major* axes: how atypical the
      input is along the directions natural data does vary in;
    * ``atoms`` - departures from point masses: a feature whose reference values sit on one exact
      value (an "atom": a blank background pixel, a zero amount) at least half of the time
      contributes its surprisal when the input is off that value: ``-log q_near`` when the value
      is *close* to the atom (within half the median distance of the reference's off-atom
      values; ``q_near`` is the reference share of such values, floored at 0.5/n) and
      ``-log(1 - p)`` otherwise (``p`` the atom frequency, capped at 0.999). Perturbation
      attacks nudge many atom features slightly off at once; natural inputs rarely do. Zero
      when the reference has no atoms (continuous features).

    Each statistic is divided by its own threshold for a false-positive rate of ``fpr / 3`` on
    the held-out events (:func:`tail_threshold`), so that ``max(resid, maha, atoms) > 1`` spends
    the budget ``fpr`` in equal thirds (a Bonferroni split: the three tails differ a lot).
    """

    center: np.ndarray
    scale: np.ndarray
    basis: np.ndarray  # (d, d): principal axes divided by their floored std
    k: int
    q_resid: float
    q_maha: float
    clip: float
    atom_idx: np.ndarray  # features with an atom
    atom_val: np.ndarray
    atom_w: np.ndarray
    atom_near_w: np.ndarray
    atom_delta: np.ndarray
    q_atoms: float = 1.0

    @staticmethod
    def fit(X_fit: np.ndarray, X_cal: np.ndarray, var_kept: float, max_components: int, clip: float,
            fpr: float = 1e-3, min_variance: float = 0.01) -> SubspaceModel:
        center, scale = robust_scale(X_fit)
        Z = standardise(X_fit, center, scale, clip)
        mu = Z.mean(axis=0)
        _, s, vt = np.linalg.svd(Z - mu, full_matrices=True)
        d = Z.shape[1]
        var = np.zeros(d)
        var[: len(s)] = s**2 / max(len(Z) - 1, 1)
        frac = np.cumsum(var) / max(float(var.sum()), 1e-300)
        k = int(np.searchsorted(frac, var_kept) + 1)
        k = max(1, min(k, max_components, d - 1 if d > 1 else 1))
        floor = max(min_variance * float(var.mean()), 1e-12)
        model = SubspaceModel(
            center=center + mu * scale,  # fold the PCA mean into the centre
            scale=scale,
            basis=np.ascontiguousarray(vt.T / np.sqrt(np.maximum(var, floor))),
            k=k,
            q_resid=1.0,
            q_maha=1.0,
            clip=clip,
            **_atoms(X_fit),
        )
        r, m, a = model.raw(X_cal)
        model.q_resid = max(tail_threshold(r, fpr / 3), 1e-12)
        model.q_maha = max(tail_threshold(m, fpr / 3), 1e-12)
        # the atom statistic is discrete; floor its scale at one typical departure
        w_med = float(np.median(model.atom_w)) if model.atom_w.size else 1.0
        model.q_atoms = max(tail_threshold(a, fpr / 3), w_med)
        return model

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Z = standardise(X, self.center, self.scale, self.clip)
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
            atoms = (off & ~near).astype(np.float64) @ self.atom_w + near.astype(np.float64) @ self.atom_near_w
        else:
            atoms = np.zeros(len(X))
        return resid, maha, atoms

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, m, a = self.raw(X)
        return r / self.q_resid, m / self.q_maha, a / self.q_atoms

    def state(self) -> dict[str, Any]:
        return {
            "center": self.center, "scale": self.scale, "basis": self.basis, "k": self.k,
            "q_resid": self.q_resid, "q_maha": self.q_maha, "clip": self.clip,
            "atom_idx": self.atom_idx, "atom_val": self.atom_val, "atom_w": self.atom_w,
            "atom_near_w": self.atom_near_w, "atom_delta": self.atom_delta, "q_atoms": self.q_atoms,
        }

    @staticmethod
    def load(s: dict[str, Any]) -> SubspaceModel:
        return SubspaceModel(
            center=np.asarray(s["center"], dtype=np.float64),
            scale=np.asarray(s["scale"], dtype=np.float64),
            basis=np.asarray(s["basis"], dtype=np.float64),
            k=int(s["k"]), q_resid=float(s["q_resid"]), q_maha=float(s["q_maha"]), clip=float(s["clip"]),
            atom_idx=np.asarray(s["atom_idx"], dtype=np.int64),
            atom_val=np.asarray(s["atom_val"], dtype=np.float64),
            atom_w=np.asarray(s["atom_w"], dtype=np.float64),
            atom_near_w=np.asarray(s["atom_near_w"], dtype=np.float64),
            atom_delta=np.asarray(s["atom_delta"], dtype=np.float64), q_atoms=float(s["q_atoms"]),
        )


def _atoms(X: np.ndarray, min_share: float = 0.5) -> dict[str, np.ndarray]:
    """Features whose most frequent exact value holds at least ``min_share`` of the reference."""
    idx, val, w, wn, dl = [], [], [], [], []
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
            w.append(-np.log(1.0 - min(p, 0.999)))
            off = np.abs(col[col != a] - a)
            delta = 0.5 * float(np.median(off)) if off.size else 0.0
            q = max(float((off <= delta).sum()) if off.size else 0.0, 0.5) / col.size
            dl.append(delta)
            wn.append(-np.log(q))
    return {
        "atom_idx": np.array(idx, dtype=np.int64),
        "atom_val": np.array(val, dtype=np.float64),
        "atom_w": np.array(w, dtype=np.float64),
        "atom_near_w": np.array(wn, dtype=np.float64),
        "atom_delta": np.array(dl, dtype=np.float64),
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
        rows = ring[lay.group_slots].reshape(-1, *tail)
        pool = np.concatenate([rows, batch_vals.reshape(-1, *tail)])
        if dtype is not None:
            pool = pool.astype(dtype, copy=False)
        return pool[self.index]


def window_index(lay: Layout, head: np.ndarray, length: np.ndarray, K: int,
                 sel: np.ndarray | None = None, last: int | None = None) -> Window:
    """Pool indices of sorted events' windows of their caller's previous ``K`` items.

    With ``c = 0..K-1`` the window column, an event of rank ``r`` whose caller's ring holds
    ``L`` items with write position ``h`` sees ring item ``(h + r + c) mod K`` while
    ``c < K - r`` and otherwise its own batch's item ``start + r - K + c``; the column is valid
    when ``c >= K - r - L``. ``sel`` restricts the rows to some sorted positions and ``last``
    keeps only the newest ``last`` columns (the pool is the same either way).
    """
    n = len(lay.slot)
    G = len(lay.group_slots)
    c = np.arange(K - (last or K), K, dtype=np.int64)[None, :]
    gi = np.repeat(np.arange(G, dtype=np.int64), lay.group_sizes)
    slot, r, start = lay.slot, lay.rank, lay.start
    if sel is not None:
        slot, r, start, gi = slot[sel], r[sel], start[sel], gi[sel]
    a = ((head[slot].astype(np.int64) + r) % K)[:, None] + c
    a -= K * (a >= K)
    a += (gi * K)[:, None]
    from_ring = c < (K - r)[:, None]
    b = (G * K + start + r - K)[:, None] + c
    index = np.where(from_ring, a, b)
    np.clip(index, 0, max(G * K + n - 1, 0), out=index)
    valid = c >= (K - r - length[slot].astype(np.int64))[:, None]
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
        self.last_ts = np.concatenate([self.last_ts, np.full(new - cap, -np.inf)])
        self.protected = np.concatenate([self.protected, np.zeros(new - cap, dtype=bool)])
        for name, (shape, dtype, fill) in self.fields.items():
            self.arrays[name] = np.concatenate(
                [self.arrays[name], np.full((new - cap, *shape), fill, dtype=dtype)]
            )

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
        got = list(map(self.index.get, callers))
        new = [i for i, s in enumerate(got) if s is None]
        slots = np.fromiter((-1 if s is None else s for s in got), dtype=np.int64, count=len(got)) \
            if new else np.array(got, dtype=np.int64)
        known = slots >= 0
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


def group_first(values: np.ndarray, lay: Layout, mask: np.ndarray) -> np.ndarray:
    """Per sorted group, the sorted position of the first event with ``mask`` (or -1)."""
    pos = np.where(mask, np.arange(len(mask)), np.iinfo(np.int64).max)
    if len(pos) == 0:
        return np.empty(0, dtype=np.int64)
    first = np.minimum.reduceat(pos, lay.group_starts)
    return np.where(first == np.iinfo(np.int64).max, -1, first)
