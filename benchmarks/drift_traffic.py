"""Synthetic, caller-dependent prediction traffic for drift tests and benchmarks.

The stream imitates production traffic of a 5-class model on ``d`` numeric features:

* features follow a 4-factor model (correlated), two features are integer-valued, one has 2% NaN;
* interactive users (a Zipf-like pool of ids) each with a small personal offset;
* batch clients sending bursts of 200-1,500 events with their own class mix, interleaved with
  normal traffic;
* retries (the same input again under a new event id, same caller) and a health-check canary
  repeating one input at a constant rate while the overall rate follows a daily cycle.

``make_stream`` returns plain arrays; ``to_batches`` cuts them into :class:`EventBatch` objects.
A ``change`` callable may transform the events after a change point (drift scenarios).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pipeline.events import EventBatch, FeatureSchema, OutcomeBatch, RouteKey, batch_from_arrays

N_CLASSES = 5
N_FACTORS = 4


@dataclass
class World:
    """Fixed parameters of a synthetic model and population (seeded)."""

    d: int
    seed: int
    loadings: np.ndarray = field(init=False)
    weights: np.ndarray = field(init=False)
    canary_x: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(10_000 + self.seed)
        self.loadings = rng.normal(0.0, 0.7, size=(N_FACTORS, self.d))
        self.weights = rng.normal(0.0, 1.0, size=(self.d, N_CLASSES)) / np.sqrt(self.d) * 2.5
        self.canary_x = rng.normal(size=self.d)


@dataclass
class Stream:
    X: np.ndarray
    client_ids: list[str | None]
    ts: np.ndarray
    P: np.ndarray
    prediction: list[str]
    label: list[str]
    event_ids: list[str]


def _features(world: World, rng: np.random.Generator, n: int, offset: np.ndarray | None = None) -> np.ndarray:
    F = rng.normal(size=(n, N_FACTORS))
    if offset is not None:
        F = F + offset
    X = F @ world.loadings + rng.normal(size=(n, world.d))
    return X


def make_stream(
    n: int,
    *,
    d: int = 64,
    seed: int = 0,
    world_seed: int = 0,
    bursts: bool = True,
    change_at: int | None = None,
    change: Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray] | None = None,
    label_change: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
) -> Stream:
    """Generate ``n`` events. ``change(X, rng, frac)`` transforms events at and after ``change_at``
    (``frac`` in [0, 1] is each event's position after the change, for gradual drifts);
    ``label_change(labels, rng)`` changes the true labels after ``change_at`` (concept drift)."""
    world = World(d, world_seed)
    rng = np.random.default_rng(seed)
    n_users = 3000
    user_offset = rng.normal(0.0, 0.15, size=(n_users, N_FACTORS))
    zipf = 1.0 / np.arange(1, n_users + 1) ** 0.7
    zipf /= zipf.sum()
    X = np.empty((n, d))
    cids: list[str | None] = []
    i = 0
    while i < n:
        # a segment of normal traffic, optionally overlaid by a batch client burst
        seg = int(min(n - i, rng.integers(300, 2500)))
        users = rng.choice(n_users, size=seg, p=zipf)
        Xs = _features(world, rng, seg, user_offset[users])
        ids: list[str | None] = [None if u % 7 == 0 else f"u{u}" for u in users]
        if bursts and rng.random() < 0.5:
            share = rng.uniform(0.4, 0.9)
            mask = rng.random(seg) < share
            off = rng.normal(0.0, 0.6, size=N_FACTORS)
            Xs[mask] = _features(world, rng, int(mask.sum()), off)
            bid = f"batch{rng.integers(0, 40)}"
            for k in np.flatnonzero(mask):
                ids[k] = bid
        X[i : i + seg] = Xs
        cids.extend(ids)
        i += seg
    # retries: repeat the previous event of the same caller under a new id
    rep = np.flatnonzero(rng.random(n) < 0.03)
    rep = rep[rep > 0]
    X[rep] = X[rep - 1]
    for k in rep:
        cids[k] = cids[k - 1]
    # rate cycle and a canary at constant rate (its share follows the cycle)
    phase = np.arange(n) / 20_000.0 * 2 * np.pi
    rate = 40.0 * (1.0 + 0.7 * np.sin(phase))  # events per second
    canary_p = 0.2 / rate * 8  # canary sends ~1.6 events/s
    canary = rng.random(n) < canary_p
    X[canary] = world.canary_x
    for k in np.flatnonzero(canary):
        cids[k] = "canary"
    ts = 1.7e9 + np.cumsum(rng.exponential(1.0 / rate))
    # two integer features and one with missing values
    X[:, 1] = np.round(X[:, 1])
    if d > 3:
        X[:, 3] = np.round(2 * X[:, 3])
    if change_at is not None and change is not None:
        frac = np.clip((np.arange(change_at, n) - change_at) / 1000.0, 0.0, 1.0)
        X[change_at:] = change(X[change_at:], rng, frac)
    if d > 2:
        X[rng.random(n) < 0.02, 2] = np.nan
    logits = np.nan_to_num(X) @ world.weights
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    P = np.round(P, 4)
    pred = P.argmax(1)
    # true labels: the model is right ~75% of the time
    u = rng.random(n)
    cum = np.cumsum(np.exp(1.6 * logits - (1.6 * logits).max(1, keepdims=True)), 1)
    cum /= cum[:, -1:]
    label = (u[:, None] > cum).sum(1)
    if change_at is not None and label_change is not None:
        label[change_at:] = label_change(label[change_at:], rng)
    return Stream(
        X=X,
        client_ids=cids,
        ts=ts,
        P=P,
        prediction=[str(int(p)) for p in pred],
        label=[str(int(v)) for v in label],
        event_ids=[f"s{seed}-e{k}" for k in range(n)],
    )


def to_batches(
    s: Stream,
    sizes: int | list[int],
    *,
    route: RouteKey | None = None,
    probabilities: bool = True,
    inline_labels: bool = False,
) -> Iterator[EventBatch]:
    """Cut a stream into batches of ``sizes`` events (an int, or a cycle of sizes)."""
    n, d = s.X.shape
    route = route or RouteKey("synthetic", "1", 0)
    schema = FeatureSchema(numeric=tuple(f"f{i}" for i in range(d)), from_array=True)
    cyc = [sizes] if isinstance(sizes, int) else list(sizes)
    i, k = 0, 0
    while i < n:
        m = min(cyc[k % len(cyc)], n - i)
        sl = slice(i, i + m)
        yield batch_from_arrays(
            s.X[sl],
            ts=s.ts[sl],
            event_ids=s.event_ids[sl],
            client_ids=s.client_ids[sl],
            prediction=s.prediction[sl],
            probabilities=s.P[sl] if probabilities else None,
            labels=s.label[sl] if inline_labels else None,
            route=route,
            schema=schema,
            start_index=i,
        )
        i += m
        k += 1


def outcomes(s: Stream, *, delay: float = 0.0, sizes: int = 500, route: RouteKey | None = None) -> Iterator[OutcomeBatch]:
    """Joined outcomes in order of label arrival (``delay`` seconds after the prediction)."""
    err = (np.array(s.prediction) != np.array(s.label)).astype(np.float64)
    arrive = s.ts + delay
    order = np.argsort(arrive, kind="stable")
    route = route or RouteKey("synthetic", "1", 0)
    for i in range(0, len(order), sizes):
        o = order[i : i + sizes]
        yield OutcomeBatch(route, [s.event_ids[k] for k in o], arrive[o], s.ts[o], err[o])
