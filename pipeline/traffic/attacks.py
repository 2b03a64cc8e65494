"""Black-box attackers and model-extraction callers that query the simulated model.

Every attacker only sees what a real caller sees: the probabilities returned for the inputs it
sends (:meth:`SimModel.predict_proba` on the projected, rounded row). Their queries become normal
prediction-log events carrying the model's real answers.

Boundary attackers work in a robust standard space ``u = (x - median) / robust_sd`` over the
continuous columns; integer and categorical columns keep the value of the natural input they
started from (perturbing a count by a fraction would be rounded away).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.traffic.datasets import sample_classes
from pipeline.traffic.model import SimModel


@dataclass(frozen=True)
class AttackKind:
    """Defaults of one attacker kind."""

    description: str
    interval_s: float  # median seconds between queries
    share: float  # default number of queries as a share of the stream
    min_queries: int
    max_queries: int


ATTACK_KINDS: dict[str, AttackKind] = {
    "boundary": AttackKind(
        "HopSkipJump-like decision-boundary walk: binary searches and gradient-estimation probes "
        "around a natural input, hundreds of near-duplicate queries in a few minutes", 0.3, 0.02, 150, 3000),
    "slow-boundary": AttackKind(
        "the same boundary walk, interleaved at a low rate (one query every ~15 s) with larger "
        "probe steps and jitter on every query", 15.0, 0.01, 60, 1000),
    "insider": AttackKind(
        "an established benign account that at some point starts a boundary walk between its "
        "ordinary requests", 4.0, 0.01, 80, 1500),
    "extraction-uniform": AttackKind(
        "model extraction with inputs drawn uniformly over the observed feature ranges", 0.8, 0.03, 200, 5000),
    "extraction-gaussian": AttackKind(
        "model extraction with independent Gaussian inputs around typical feature values", 0.8, 0.03, 200, 5000),
    "extraction-jacobian": AttackKind(
        "Jacobian-based dataset augmentation: a small natural seed set grown by steps along the "
        "sign of a substitute model's gradient, retrained every round", 0.8, 0.03, 200, 5000),
    "extraction-perturb": AttackKind(
        "model extraction from a pool of natural inputs, each query a random perturbation of one",
        0.8, 0.03, 200, 5000),
}  # fmt: skip


@dataclass(frozen=True)
class Attacker:
    """One attacking caller: its kind, when it starts and how many queries it sends.

    ``at`` is the first query's position (fraction of the stream below 1, else an event index);
    ``n_queries`` defaults to the kind's share of the stream within its bounds; ``interval_s``
    to the kind's median gap between queries (log-normal gaps).
    """

    kind: str
    at: float = 0.3
    n_queries: int | None = None
    interval_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"unknown attacker kind {self.kind!r}; known: {sorted(ATTACK_KINDS)}")
        if self.at < 0:
            raise ValueError(f"attacker position must be >= 0, got {self.at}")

    def budget(self, n_events: int) -> int:
        if self.n_queries is not None:
            return max(1, int(self.n_queries))
        k = ATTACK_KINDS[self.kind]
        return int(np.clip(round(k.share * n_events), k.min_queries, k.max_queries))

    def start_index(self, n_events: int) -> int:
        return int(round(self.at * n_events)) if self.at < 1 else int(self.at)

    def gap_median(self) -> float:
        return self.interval_s if self.interval_s is not None else ATTACK_KINDS[self.kind].interval_s


class Oracle:
    """Black-box access to the model in ``u`` space, recording every query sent (up to a budget)."""

    def __init__(self, model: SimModel, base_row: np.ndarray, budget: int, rng: np.random.Generator,
                 jitter: float = 0.0) -> None:  # fmt: skip
        self.model = model
        self.ds = model.dataset
        # attackers move only the continuous columns (integers and categoricals stay as in base_row)
        self.num = np.flatnonzero(self.ds.decimals > 0)
        self.base = np.asarray(base_row, dtype=np.float64)
        self.left = budget
        self.rng = rng
        self.jitter = jitter
        self.sent: list[np.ndarray] = []

    def to_u(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        return (X[:, self.num] - self.ds.center[self.num]) / self.ds.scale[self.num]  # type: ignore[no-any-return]

    def to_x(self, U: np.ndarray) -> np.ndarray:
        U = np.atleast_2d(U)
        X = np.tile(self.base, (U.shape[0], 1))
        X[:, self.num] = self.ds.center[self.num] + U * self.ds.scale[self.num]
        return self.ds.project(X)

    def query(self, U: np.ndarray) -> np.ndarray:
        """Send up to ``left`` rows of ``U``; returns the probabilities of those actually sent."""
        U = np.atleast_2d(U)[: self.left]
        if U.shape[0] == 0:
            return np.empty((0, self.ds.n_classes))
        if self.jitter > 0:
            U = U + self.jitter * self.rng.standard_normal(U.shape)
        X = self.to_x(U)
        self.left -= X.shape[0]
        self.sent.append(X)
        return self.model.predict_proba(X)

    def queries(self) -> np.ndarray:
        return np.vstack(self.sent) if self.sent else np.empty((0, self.ds.n_features))


def natural_point(model: SimModel, rng: np.random.Generator, cls: int, min_conf: float = 0.7) -> np.ndarray:
    """A natural input of class ``cls`` that the model confidently predicts as ``cls``."""
    ds = model.dataset
    X = ds.sample(rng, np.full(64, cls, dtype=np.intp))
    P = model.predict_proba(X)
    ok = np.flatnonzero((P.argmax(axis=1) == cls) & (P[:, cls] >= min_conf))
    return X[ok[0]] if ok.size else X[int(np.argmax(P[:, cls]))]  # type: ignore[no-any-return]


def boundary_walk(model: SimModel, rng: np.random.Generator, budget: int, *, probe: float = 0.02,
                  jitter: float = 0.0) -> np.ndarray:  # fmt: skip
    """Queries of a HopSkipJump-like untargeted attack on a confidently classified natural input.

    Starts from ``x_src`` (class A) and a natural input the model puts in another class, binary
    searches the segment between them for the decision boundary, then repeats: estimate the
    boundary normal from signs of random probes at distance ``probe * distance`` around the
    boundary point, step along it, and binary-search back towards ``x_src``. Queries are
    near-duplicates and their margin (top-1 minus top-2 probability) collapses towards 0.
    """
    ds = model.dataset
    counts = np.bincount(ds.reference_y, minlength=ds.n_classes)
    src_cls = int(rng.choice(ds.n_classes, p=counts / counts.sum()))
    x_src = natural_point(model, rng, src_cls)
    others = [c for c in range(ds.n_classes) if c != src_cls]
    o = Oracle(model, x_src, budget, rng, jitter)
    u0 = o.to_u(x_src)[0]

    def adversarial(P: np.ndarray) -> np.ndarray:
        return P.argmax(axis=1) != src_cls  # type: ignore[no-any-return]

    o.query(u0)
    u_adv = None
    for _ in range(10):
        x_t = natural_point(model, rng, int(rng.choice(others)))
        fixed = np.flatnonzero(ds.decimals == 0)
        x_t[fixed] = x_src[fixed]
        u_t = o.to_u(x_t)[0]
        P = o.query(u_t)
        if P.shape[0] == 0:
            return o.queries()
        if adversarial(P)[0]:
            u_adv = u_t
            break
    if u_adv is None:
        return o.queries()

    def bsearch(u_far: np.ndarray) -> np.ndarray:
        lo, hi = 0.0, 1.0
        length = float(np.linalg.norm(u_far - u0))
        tol = max(0.01 * length, 1e-3)
        while (hi - lo) * length > tol and o.left > 0:
            mid = (lo + hi) / 2
            P = o.query(u0 + mid * (u_far - u0))
            if P.shape[0] and adversarial(P)[0]:
                hi = mid
            else:
                lo = mid
        return u0 + hi * (u_far - u0)  # type: ignore[no-any-return]

    ub = bsearch(u_adv)
    it = 0
    while o.left > 0:
        it += 1
        dist = float(np.linalg.norm(ub - u0))
        delta = max(probe * dist, 1e-3)
        k = min(int(6 * np.sqrt(it)) + 4, 40)
        V = rng.standard_normal((k, u0.size))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        P = o.query(ub + delta * V)
        if P.shape[0] == 0:
            break
        phi = np.where(adversarial(P), 1.0, -1.0)
        if np.all(phi == phi[0]):
            g = phi[0] * V[: P.shape[0]].mean(axis=0)
        else:
            g = ((phi - phi.mean())[:, None] * V[: P.shape[0]]).mean(axis=0)
        norm = float(np.linalg.norm(g))
        g = g / norm if norm > 0 else V[0]
        eps = dist / np.sqrt(it)
        stepped = None
        for _ in range(6):
            cand = ub + eps * g
            P = o.query(cand)
            if P.shape[0] == 0:
                break
            if adversarial(P)[0]:
                stepped = cand
                break
            eps /= 2
        if stepped is not None:
            ub = bsearch(stepped)
    return o.queries()


def _fit_softmax(U: np.ndarray, y: np.ndarray, k: int, steps: int = 150, lr: float = 0.5) -> np.ndarray:
    """Weights ``(k, d + 1)`` of a small L2-regularised softmax regression (the substitute)."""
    A = np.hstack([U, np.ones((U.shape[0], 1))])
    W = np.zeros((k, A.shape[1]))
    onehot = np.eye(k)[y]
    for _ in range(steps):
        S = A @ W.T
        S -= S.max(axis=1, keepdims=True)
        P = np.exp(S)
        P /= P.sum(axis=1, keepdims=True)
        W -= lr * (((P - onehot).T @ A) / A.shape[0] + 1e-3 * W)
    return W


def jacobian_augmentation(model: SimModel, rng: np.random.Generator, budget: int, *, n_seed: int = 24,
                          step: float = 0.5) -> np.ndarray:  # fmt: skip
    """Queries of Papernot-style Jacobian-based dataset augmentation (substitute-model extraction)."""
    ds = model.dataset
    y0 = sample_classes(rng, np.tile(ds.prior, (n_seed, 1)))
    seeds = ds.sample(rng, y0)
    o = Oracle(model, seeds[0], budget, rng)
    # the seed set itself is queried with its own categoricals: send it row by row via to_x bases
    sent = [seeds[: o.left]]
    o.left -= sent[0].shape[0]
    labels = model.predict(sent[0])
    U = o.to_u(sent[0])
    rnd = 0
    while o.left > 0:
        W = _fit_softmax(U, labels, ds.n_classes)
        A = np.hstack([U, np.ones((U.shape[0], 1))])
        S = A @ W.T
        S -= S.max(axis=1, keepdims=True)
        P = np.exp(S)
        P /= P.sum(axis=1, keepdims=True)
        # d log p_y / d u = W_y - sum_k p_k W_k  (without the bias column)
        grad = W[labels, :-1] - P @ W[:, :-1]
        sign = 1.0 if rnd % 2 == 0 else -1.0  # periodic step direction, as in the original method
        U_new = U + sign * step * np.sign(grad)
        k = min(U_new.shape[0], o.left)
        U_new = U_new[rng.permutation(U_new.shape[0])[:k]]
        X_new = o.to_x(U_new)
        o.left -= k
        sent.append(X_new)
        labels = np.concatenate([labels, model.predict(X_new)])
        U = np.vstack([U, o.to_u(X_new)])
        rnd += 1
    return np.vstack(sent)


def extraction_queries(kind: str, model: SimModel, rng: np.random.Generator, budget: int) -> np.ndarray:
    """Queries of one of the extraction kinds (``extraction-*``)."""
    ds = model.dataset
    num = ds.numeric_idx
    cats = sorted(ds.categorical)
    if kind == "extraction-jacobian":
        return jacobian_augmentation(model, rng, budget)
    X = np.empty((budget, ds.n_features))
    for j in cats:
        X[:, j] = rng.integers(0, len(ds.categorical[j]), size=budget)
    if kind == "extraction-uniform":
        X[:, num] = rng.uniform(ds.range_low[num], ds.range_high[num], size=(budget, num.size))
    elif kind == "extraction-gaussian":
        X[:, num] = ds.center[num] + 1.5 * ds.scale[num] * rng.standard_normal((budget, num.size))
    elif kind == "extraction-perturb":
        pool_y = sample_classes(rng, np.tile(ds.prior, (32, 1)))
        pool = ds.sample(rng, pool_y)
        X = pool[rng.integers(0, pool.shape[0], size=budget)].copy()
        X[:, num] += 0.3 * ds.scale[num] * rng.standard_normal((budget, num.size))
    else:
        raise ValueError(f"not an extraction kind: {kind!r}")
    return ds.project(X)


def attacker_queries(spec: Attacker, model: SimModel, rng: np.random.Generator, n_events: int) -> np.ndarray:
    """All queries ``spec`` would send (before the stream is cut at ``n_events``)."""
    budget = spec.budget(n_events)
    if spec.kind == "boundary":
        return boundary_walk(model, rng, budget)
    if spec.kind == "slow-boundary":
        return boundary_walk(model, rng, budget, probe=0.08, jitter=0.03)
    if spec.kind == "insider":
        return boundary_walk(model, rng, budget, probe=0.03)
    return extraction_queries(spec.kind, model, rng, budget)
