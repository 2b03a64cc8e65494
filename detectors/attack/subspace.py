"""The robust subspace model that scores inputs against a reference (marginal transforms, whitened
PCA, atom departures) and its tail calibration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.attack.scaling import robust_scale, standardise


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
