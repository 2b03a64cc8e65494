"""Labelled traffic for the attack benchmarks: benign callers, ART attacks, extraction thieves.

Two datasets: scikit-learn's ``load_digits`` scaled to [0, 1] (64 pixels), and a tabular set
from ``make_classification`` (16 features) mapped to natural units (each feature gets its own
offset and scale, e.g. an age-like, an income-like column). The model is a logistic regression
(in standardised units for the tabular set).

* **benign**: ordinary users (a few dozen queries each), batch jobs (hundreds of queries in a
  burst), retrying clients (the same payload re-sent 1-3 times under new event ids) and a
  health-check canary (one fixed input every 30 s). Benign inputs never repeat by accident:
  digits are drawn without replacement per caller and augmented (1-pixel shift, gain, noise);
  tabular rows are fresh draws of the generating process.
* **black-box campaigns**, every query logged by wrapping the estimator's ``predict``: ART
  HopSkipJump, BoundaryAttack, SquareAttack (digits; a ``BlackBoxClassifierNeuralNetwork`` with
  image shape around the same model) and our own random search; a slow attacker (one query
  every 45 s) and an attacker hidden in a benign account (one attack query per two benign).
* **extraction**: our own generators - uniform noise over the data box, independent Gaussian
  per feature, Jacobian-based augmentation (Papernot et al.: seeds + ``lambda * sign`` of a
  substitute's gradient, substitute retrained each round) and a natural-start thief (natural
  inputs, then random perturbations around them).
* **white-box adversarial events**: ART FGSM and PGD (L-inf) at several strengths.

Nothing is cached on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.linear_model import LogisticRegression

logging.getLogger("art").setLevel(logging.ERROR)


class StopAttack(Exception):
    """Raised by the logging wrapper once an attacker has sent its query budget."""


@dataclass
class Dataset:
    name: str
    d: int
    n_classes: int
    model: LogisticRegression
    pool: np.ndarray  # natural units, benign inputs
    test: np.ndarray  # natural units, attack seeds
    test_y: np.ndarray
    mu: np.ndarray  # model space = (x - mu) / sd
    sd: np.ndarray
    clip_model: tuple[float, float]  # clip values in model space
    lo: np.ndarray  # natural-unit data box
    hi: np.ndarray
    eps_levels: tuple[float, ...]  # white-box strengths in model units (= data-std units on tabular)
    eps_labels: tuple[str, ...]
    gen: np.random.Generator = field(repr=False, default_factory=lambda: np.random.default_rng(0))

    def to_model(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mu) / self.sd

    def to_natural(self, Z: np.ndarray) -> np.ndarray:
        return Z * self.sd + self.mu

    def proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self.to_model(X))


def make_digits(seed: int) -> Dataset:
    data = load_digits()
    X = data.data / 16.0
    y = data.target
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    tr, te = perm[:900], perm[900:]
    model = LogisticRegression(C=1.0, max_iter=2000).fit(X[tr], y[tr])
    return Dataset(
        name="digits", d=64, n_classes=10, model=model, pool=X[te], test=X[te], test_y=y[te],
        mu=np.zeros(64), sd=np.ones(64), clip_model=(0.0, 1.0), lo=np.zeros(64), hi=np.ones(64),
        eps_levels=(0.05, 0.1, 0.2), eps_labels=("0.05", "0.1", "0.2"), gen=rng,
    )


def make_tabular(seed: int) -> Dataset:
    # a fixed generating process (same "world" for every seed); seeds change the samples drawn
    Xs, y = make_classification(
        n_samples=40000, n_features=16, n_informative=6, n_redundant=6, n_repeated=0, n_classes=3,
        n_clusters_per_class=2, class_sep=1.5, random_state=1234,
    )
    world = np.random.default_rng(99)
    scale = 10.0 ** world.uniform(-1, 4, size=16)
    offset = world.uniform(-2, 8, size=16) * scale
    Xn = Xs * scale + offset
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(Xn))
    tr, te = perm[:4000], perm[4000:]
    mu, sd = Xn[tr].mean(axis=0), Xn[tr].std(axis=0)
    model = LogisticRegression(C=1.0, max_iter=2000).fit((Xn[tr] - mu) / sd, y[tr])
    return Dataset(
        name="tabular", d=16, n_classes=3, model=model, pool=Xn[te], test=Xn[te], test_y=y[te],
        mu=mu, sd=sd, clip_model=(-6.0, 6.0), lo=Xn[tr].min(axis=0), hi=Xn[tr].max(axis=0),
        eps_levels=(0.25, 0.5, 1.0), eps_labels=("0.25std", "0.5std", "1std"), gen=rng,
    )


# ---------------------------------------------------------------------------------------------
# benign
# ---------------------------------------------------------------------------------------------


class BenignSource:
    """Fresh natural inputs per caller (no accidental exact repeats)."""

    def __init__(self, ds: Dataset, rng: np.random.Generator) -> None:
        self.ds = ds
        self.rng = rng
        self.next = 0
        self.order = rng.permutation(len(ds.pool))

    def draw(self, n: int) -> np.ndarray:
        ds = self.ds
        if ds.name == "tabular":
            idx = self.order[(self.next + np.arange(n)) % len(self.order)]
            self.next += n
            return ds.pool[idx].copy()
        idx = self.rng.choice(len(ds.pool), size=n, replace=n > len(ds.pool))
        imgs = ds.pool[idx].reshape(n, 8, 8)
        out = np.empty_like(imgs)
        padded = np.pad(imgs, ((0, 0), (1, 1), (1, 1)))
        for i in range(n):  # shift by up to one pixel, blank fill
            dx, dy = self.rng.integers(0, 3, size=2)
            out[i] = padded[i, dx:dx + 8, dy:dy + 8]
        out *= self.rng.uniform(0.85, 1.15, size=(n, 1, 1))
        out += self.rng.normal(0, 0.02, size=out.shape) * (out > 0)  # ink noise, clean background
        return np.clip(out.reshape(n, 64), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# black-box attacks (ART), queries logged
# ---------------------------------------------------------------------------------------------


def _logged_art_queries(ds: Dataset, attack_name: str, x0: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Run an ART black-box attack on ``x0`` (natural units) and return its queries (natural)."""
    from art.attacks.evasion import BoundaryAttack, HopSkipJump, SquareAttack
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork, SklearnClassifier

    np.random.seed(seed)  # ART draws from numpy's global generator; seed it for reproducibility
    log: list[np.ndarray] = []

    def record(x: np.ndarray) -> None:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        room = cap - sum(len(r) for r in log)
        log.append(flat[:room])
        if room <= len(flat):
            raise StopAttack

    xm = ds.to_model(x0[None, :])
    if attack_name == "square":
        def predict_fn(x: np.ndarray) -> np.ndarray:
            record(x)
            return ds.model.predict_proba(np.asarray(x).reshape(len(x), -1))

        est: Any = BlackBoxClassifierNeuralNetwork(
            predict_fn, input_shape=(1, 8, 8), nb_classes=ds.n_classes, channels_first=True,
            clip_values=ds.clip_model,
        )
        attack: Any = SquareAttack(est, norm=np.inf, eps=0.3, max_iter=cap, p_init=0.3, verbose=False)
        xin = xm.reshape(1, 1, 8, 8)
    else:
        est = SklearnClassifier(model=ds.model, clip_values=ds.clip_model)
        inner = est.predict

        def predict(x: np.ndarray, *a: Any, **kw: Any) -> np.ndarray:
            record(x)
            return inner(x, *a, **kw)

        est.predict = predict  # type: ignore[method-assign]
        if attack_name == "hsj":
            attack = HopSkipJump(est, targeted=False, norm=2, max_iter=50, max_eval=200, init_eval=20,
                                 init_size=50, verbose=False)
        elif attack_name == "boundary":
            attack = BoundaryAttack(est, targeted=False, max_iter=200, delta=0.01, epsilon=0.01,
                                    num_trial=10, sample_size=10, init_size=50, verbose=False)
        else:
            raise ValueError(attack_name)
        xin = xm
    try:
        for _ in range(20):  # restart until the budget is used (an attack may finish early)
            attack.generate(xin.astype(np.float32) if attack_name == "square" else xin)
    except StopAttack:
        pass
    Q = np.concatenate(log) if log else np.empty((0, ds.d))
    return ds.to_natural(Q)


def random_search_queries(ds: Dataset, x0: np.ndarray, cap: int, rng: np.random.Generator,
                          step: float | None = None) -> np.ndarray:
    """Score-based random search (our own): flip random feature subsets by +-step, keep if the
    true class probability drops."""
    z = ds.to_model(x0[None, :])[0].copy()
    step = step if step is not None else (0.1 if ds.name == "digits" else 0.3)
    lo, hi = ds.clip_model
    y = int(np.argmax(ds.model.predict_proba(z[None, :])[0]))
    best = ds.model.predict_proba(z[None, :])[0, y]
    out = [z.copy()]
    while len(out) < cap:
        cand = z.copy()
        k = max(1, ds.d // 8)
        j = rng.choice(ds.d, size=k, replace=False)
        cand[j] = np.clip(cand[j] + step * rng.choice([-1.0, 1.0], size=k), lo, hi)
        out.append(cand)
        p = ds.model.predict_proba(cand[None, :])[0, y]
        if p < best:
            z, best = cand, p
    return ds.to_natural(np.array(out))


# ---------------------------------------------------------------------------------------------
# extraction (our own generators)
# ---------------------------------------------------------------------------------------------


def extraction_queries(ds: Dataset, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.uniform(ds.lo, ds.hi, size=(n, ds.d))
    if kind == "gaussian":
        mu, sd = ds.pool.mean(axis=0), ds.pool.std(axis=0)
        X = rng.normal(mu, sd, size=(n, ds.d))
        return np.clip(X, ds.lo, ds.hi) if ds.name == "digits" else X
    if kind == "jacobian":
        return _jacobian(ds, n, rng, n_seeds=10, lam=0.1 if ds.name == "digits" else 0.5)
    if kind == "natural_start":
        k = 20
        seeds = ds.pool[rng.choice(len(ds.pool), size=k, replace=False)]
        out = [seeds]
        sd = ds.pool.std(axis=0) + (0.05 if ds.name == "digits" else 0.0)
        while sum(len(o) for o in out) < n:
            base = seeds[rng.integers(0, k, size=k)]
            out.append(base + rng.normal(0, 0.3, size=base.shape) * sd)
        X = np.concatenate(out)[:n]
        return np.clip(X, ds.lo, ds.hi) if ds.name == "digits" else X
    raise ValueError(kind)


def _jacobian(ds: Dataset, n: int, rng: np.random.Generator, n_seeds: int, lam: float) -> np.ndarray:
    S = ds.to_model(ds.pool[rng.choice(len(ds.pool), size=n_seeds, replace=False)])
    queries = [S]
    labels = [ds.model.predict(S)]
    lo, hi = ds.clip_model
    while sum(len(q) for q in queries) < n:
        Xa, ya = np.concatenate(queries), np.concatenate(labels)
        if len(np.unique(ya)) < 2:
            sub_grad = rng.normal(size=(len(Xa), ds.d))
        else:
            sub = LogisticRegression(max_iter=500).fit(Xa, ya)
            W = sub.coef_ if sub.coef_.shape[0] > 1 else np.vstack([-sub.coef_, sub.coef_])
            cls = np.searchsorted(sub.classes_, ya)
            sub_grad = W[np.minimum(cls, len(W) - 1)]
        new = np.clip(Xa + lam * np.sign(sub_grad), lo, hi)
        queries.append(new)
        labels.append(ds.model.predict(new))
    return ds.to_natural(np.concatenate(queries)[:n])


# ---------------------------------------------------------------------------------------------
# white-box adversarial inputs
# ---------------------------------------------------------------------------------------------


def whitebox(ds: Dataset, attack: str, eps: float, X: np.ndarray) -> np.ndarray:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import SklearnClassifier

    est = SklearnClassifier(model=ds.model, clip_values=ds.clip_model)
    Z = ds.to_model(X)
    if attack == "fgsm":
        adv = FastGradientMethod(est, norm=np.inf, eps=eps).generate(Z)
    else:
        adv = ProjectedGradientDescent(est, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=10,
                                       verbose=False).generate(Z)
    return ds.to_natural(adv)


# ---------------------------------------------------------------------------------------------
# the stream
# ---------------------------------------------------------------------------------------------


@dataclass
class Stream:
    X: np.ndarray
    ts: np.ndarray
    clients: list[str]
    role: list[str]  # "benign", "warmup", or the attack / extraction / white-box tag
    is_attack_query: np.ndarray  # per event: sent as part of an attack (for mixed accounts)
    callers: dict[str, str] = field(default_factory=dict)  # caller -> role


def build_stream(ds: Dataset, seed: int, warmup: int = 2000, duration: float = 3600.0,
                 attack_cap: int = 300, n_whitebox: int = 100, with_art: bool = True) -> Stream:
    rng = np.random.default_rng(seed)
    src = BenignSource(ds, rng)
    parts: list[tuple[np.ndarray, np.ndarray, list[str], str, np.ndarray]] = []

    def add(X: np.ndarray, ts: np.ndarray, caller: str | list[str], role: str,
            atk: np.ndarray | None = None) -> None:
        names = caller if isinstance(caller, list) else [caller] * len(X)
        parts.append((X, ts, names, role, atk if atk is not None else np.full(len(X), role != "benign")))

    t0 = float(warmup)
    # warm-up: 2000 benign events, 1 event/s, from 150 callers (enough that the outlier detector's
    # caller-capped reference - at most 2% per caller - fills within the warm-up)
    add(src.draw(warmup), np.arange(warmup, dtype=float),
        [f"user-w{i}" for i in rng.integers(0, 150, size=warmup)], "benign")
    # ordinary users
    for i in range(40):
        n = int(rng.integers(20, 120))
        add(src.draw(n), np.sort(rng.uniform(t0, t0 + duration, size=n)), f"user-{i}", "benign")
    # batch jobs: bursts at 50 queries/s
    for i in range(2):
        n = 800
        start = rng.uniform(t0, t0 + duration - 60)
        add(src.draw(n), start + np.arange(n) / 50.0, f"batch-{i}", "benign")
    # retrying clients
    for i in range(2):
        base = src.draw(150)
        reps = rng.integers(1, 4, size=150)
        X = np.repeat(base, reps, axis=0)
        tb = np.sort(rng.uniform(t0, t0 + duration, size=150))
        ts = np.concatenate([tb[k] + 2.0 * np.arange(r) for k, r in enumerate(reps.tolist())])
        add(X, ts, f"retry-{i}", "benign")
    # health-check canary
    canary = src.draw(1)
    nc = int(duration // 30)
    add(np.repeat(canary, nc, axis=0), t0 + 30.0 * np.arange(nc), "canary", "benign")

    seed_inputs = src.draw(64)  # attackers start from inputs like everyone else's
    si = iter(range(64))

    def fast_ts(n: int, rate: float = 5.0) -> np.ndarray:
        start = rng.uniform(t0, t0 + duration - n / rate)
        return start + np.arange(n) / rate

    # black-box campaigns
    kinds = ["hsj", "boundary", "randsearch"] + (["square"] if ds.name == "digits" else [])
    for k in kinds:
        for rep in range(2):
            x0 = seed_inputs[next(si)]
            if k == "randsearch" or not with_art:
                Q = random_search_queries(ds, x0, attack_cap, rng)
            else:
                Q = _logged_art_queries(ds, k, x0, attack_cap, seed * 100 + rep)
            add(Q, fast_ts(len(Q)), f"atk-{k}-{rep}", f"campaign:{k}")
    # slow careful attacker: one query every 45 s
    x0 = seed_inputs[next(si)]
    Q = _logged_art_queries(ds, "hsj", x0, 80, seed * 100 + 7) if with_art else \
        random_search_queries(ds, x0, 80, rng)
    add(Q, t0 + 45.0 * np.arange(len(Q)) + rng.uniform(0, 5), "atk-slow-hsj", "campaign:slow-hsj")
    # attacker inside a benign account: one attack query per two benign ones
    x0 = seed_inputs[next(si)]
    Q = _logged_art_queries(ds, "boundary", x0, 150, seed * 100 + 8) if with_art else \
        random_search_queries(ds, x0, 150, rng)
    B = src.draw(2 * len(Q))
    X = np.empty((3 * len(Q), ds.d))
    atk = np.zeros(3 * len(Q), dtype=bool)
    X[0::3], X[1::3], X[2::3] = B[0::2], B[1::2], Q
    atk[2::3] = True
    add(X, fast_ts(len(X), rate=2.0), "acct-mixed", "campaign:inside-benign", atk)
    # extraction thieves
    for k in ("uniform", "gaussian", "jacobian", "natural_start"):
        for rep in range(2):
            Q = extraction_queries(ds, k, attack_cap, rng)
            add(Q, fast_ts(len(Q), rate=2.0), f"thief-{k}-{rep}", f"extraction:{k}")
    # white-box adversarial inputs, spread over 5 callers per (attack, strength)
    if with_art:
        for atk_name in ("fgsm", "pgd"):
            for eps, lab in zip(ds.eps_levels, ds.eps_labels, strict=True):
                A = whitebox(ds, atk_name, eps, src.draw(n_whitebox))
                add(A, np.sort(rng.uniform(t0, t0 + duration, size=n_whitebox)),
                    [f"wb-{atk_name}-{lab}-{i % 5}" for i in range(n_whitebox)], f"whitebox:{atk_name}:{lab}")
    X = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    clients = [c for p in parts for c in p[2]]
    role = [p[3] for p in parts for _ in range(len(p[0]))]
    atk = np.concatenate([p[4] for p in parts])
    order = np.argsort(ts, kind="stable")
    callers: dict[str, str] = {}
    for p in parts:
        for c in set(p[2]):
            callers[c] = p[3]
    return Stream(
        X=X[order], ts=ts[order], clients=[clients[i] for i in order],
        role=[role[i] for i in order], is_attack_query=atk[order], callers=callers,
    )
