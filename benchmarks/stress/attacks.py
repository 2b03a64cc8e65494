"""Attackers against the served model: ART black-box evasion attacks and two extraction thieves.

Every query an attack makes is recorded (in natural units) and later replayed as that caller's events.
The attacker works in a standardised space (z = (x - mean) / std from public summary statistics), as a
competent attacker of a tabular model would, clipped to the range the features take in the data.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from benchmarks.stress.models import ModelSpec

warnings.filterwarnings("ignore", message="PyTorch not found")
logging.getLogger("art").setLevel(logging.ERROR)


class _Budget(Exception):
    """Raised inside the oracle once the attacker's query budget is spent."""


class _Oracle:
    """The served model behind an API: records every query, answers like the server does."""

    def __init__(self, spec: ModelSpec, budget: int, labels_only: bool) -> None:
        self.spec = spec
        self.budget = budget
        self.labels_only = labels_only
        self.queries: list[np.ndarray] = []
        self.lo = (spec.X.min(axis=0) - spec.mean) / spec.std
        self.hi = (spec.X.max(axis=0) - spec.mean) / spec.std

    def natural(self, z: np.ndarray) -> np.ndarray:
        return np.round(z * self.spec.std + self.spec.mean, 6)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float).reshape(len(z), -1)
        room = self.budget - len(self.queries)
        if room <= 0:
            raise _Budget
        x = self.natural(z[:room])
        self.queries.extend(x)
        p = self.spec.predict_proba(x)
        if len(z) > room:
            raise _Budget
        if self.labels_only:
            return np.eye(p.shape[1])[np.argmax(p, axis=1)]
        return np.round(p, 4)


def _victims(spec: ModelSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """Natural inputs the attacker wants to flip (standardised)."""
    X, _ = spec.sample(rng, n)
    return (X - spec.mean) / spec.std


def art_attack(spec: ModelSpec, name: str, seed: int, budget: int = 2500, victims: int = 6) -> np.ndarray:
    """Queries of an ART attack (``hsj``, ``boundary``) on ``victims`` inputs, up to ``budget`` queries."""
    from art.estimators.classification import BlackBoxClassifier

    rng = np.random.default_rng(seed)
    oracle = _Oracle(spec, budget, labels_only=name != "square")
    d = spec.X.shape[1]
    clf = BlackBoxClassifier(oracle, (d,), len(spec.classes),
                             clip_values=(oracle.lo.astype(np.float32), oracle.hi.astype(np.float32)))
    np.random.seed(seed)  # ART draws from the global generator ...
    with _seeded_random_state(seed):  # ... and from unseeded RandomState() instances
        _run_art(clf, oracle, name, _victims(spec, rng, victims))
    return np.array(oracle.queries)


@contextmanager
def _seeded_random_state(seed: int) -> Iterator[None]:
    """Make ``np.random.RandomState()`` without a seed deterministic (ART's HSJ and Boundary create them)."""
    original = np.random.RandomState
    counter = itertools.count()

    def make(s: Any = None) -> np.random.RandomState:
        return original(seed * 1000 + next(counter) if s is None else s)

    np.random.RandomState = make  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        np.random.RandomState = original  # type: ignore[misc]


def _run_art(clf: Any, oracle: _Oracle, name: str, victims: np.ndarray) -> None:
    from art.attacks.evasion import BoundaryAttack, HopSkipJump

    for z in victims:
        x = z[None, :].astype(np.float32)
        if name == "hsj":
            attack = HopSkipJump(clf, max_iter=8, max_eval=200, init_eval=20, init_size=50, verbose=False)
        elif name == "boundary":
            attack = BoundaryAttack(clf, targeted=False, max_iter=300, num_trial=10, sample_size=10,
                                    init_size=50, delta=0.05, epsilon=0.05, verbose=False)
        else:
            raise ValueError(name)
        try:
            attack.generate(x)
        except _Budget:
            break


def random_search(spec: ModelSpec, seed: int, budget: int = 2500, victims: int = 6, eps: float = 0.6,
                  p_init: float = 0.3) -> np.ndarray:
    """Square-attack-style random search (Andriushchenko et al.) for tabular inputs, score-based.

    ART's ``SquareAttack`` needs a neural-network estimator (image squares), so this is its tabular analogue:
    each step moves a random subset of features (its size shrinking from ``p_init`` of them, as Square's
    schedule does) to a vertex of the L-inf ball of radius ``eps`` (z units) and keeps the step if the
    margin of the true class drops; it stops on a flip or at the budget. A candidate equal to the incumbent
    is changed before it is sent (Square's reference code resamples it too), so no query is an exact repeat.
    """
    rng = np.random.default_rng(seed)
    oracle = _Oracle(spec, budget, labels_only=False)
    d = spec.X.shape[1]
    try:
        for z0 in _victims(spec, rng, victims):
            p = oracle(z0[None, :])[0]
            c = int(np.argmax(p))

            def margin(q: np.ndarray, c: int = c) -> float:
                return float(q[c] - np.max(np.delete(q, c)))

            delta = rng.choice([-eps, eps], size=d)
            z = np.clip(z0 + delta, oracle.lo, oracle.hi)
            best = margin(oracle(z[None, :])[0])
            for it in range(budget):
                if best < 0:
                    break
                frac = p_init / (1 + it // 50)
                k = max(1, int(round(frac * d)))
                cand = delta.copy()
                idx = rng.choice(d, size=k, replace=False)
                cand[idx] = rng.choice([-eps, eps], size=k)
                if np.array_equal(cand, delta):  # as Square does: never re-query the incumbent
                    cand[idx[0]] = -delta[idx[0]]
                zc = np.clip(z0 + cand, oracle.lo, oracle.hi)
                m = margin(oracle(zc[None, :])[0])
                if m < best:
                    best, delta = m, cand
    except _Budget:
        pass
    return np.array(oracle.queries)


def knockoff_thief(spec: ModelSpec, seed: int, n: int) -> np.ndarray:
    """KnockoffNets-like transfer set: plausible-looking rows from another distribution.

    The thief knows each feature's public mean and spread (a data dictionary) but not the joint
    distribution: it samples every feature independently from a log-normal or normal fitted to its
    marginal, in natural units and at the data's precision. The marginals look right; correlations do not.
    """
    rng = np.random.default_rng(seed)
    X = np.empty((n, spec.X.shape[1]))
    for j in range(spec.X.shape[1]):
        col = spec.X[:, j]
        if col.min() > 0:
            X[:, j] = np.exp(rng.normal(np.log(col).mean(), np.log(col).std(), n))
        else:
            X[:, j] = rng.normal(col.mean(), col.std(), n)
    return spec.finish(X)


def jacobian_thief(spec: ModelSpec, seed: int, seeds: int = 40, rounds: int = 5, lam: float = 0.3) -> np.ndarray:
    """Papernot-style seed-set augmentation: natural seeds, then steps along a substitute's gradient sign.

    The substitute is a logistic regression on the labels the thief has stolen so far (in z-space); each
    round queries every known point moved by ``lam`` times the sign of the substitute's gradient for its
    stolen class (alternating direction each round, as in JBDA with reservoir).
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    Z = _victims(spec, rng, seeds)
    out = [Z]
    labels = np.argmax(spec.predict_proba(spec.finish(Z * spec.std + spec.mean)), axis=1)
    for r in range(rounds):
        allz = np.concatenate(out)
        lab = labels
        if len(np.unique(lab)) < 2:
            grad = rng.normal(size=allz.shape)
        else:
            sub = LogisticRegression(max_iter=500).fit(allz, lab)
            w = sub.coef_ if sub.coef_.shape[0] > 1 else np.vstack([-sub.coef_[0], sub.coef_[0]])
            grad = w[np.clip(lab, 0, len(w) - 1)]
        sign = 1.0 if r % 2 == 0 else -1.0
        new = allz[-min(len(allz), 160):] + sign * lam * np.sign(grad[-min(len(allz), 160):])
        out.append(new)
        x_new = spec.finish(new * spec.std + spec.mean)
        labels = np.concatenate([labels, np.argmax(spec.predict_proba(x_new), axis=1)])
    Zall = np.concatenate(out)
    return spec.finish(Zall * spec.std + spec.mean)
