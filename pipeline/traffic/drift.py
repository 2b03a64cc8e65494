"""Drift building blocks applied to benign traffic from a change point on.

Each drift starts at ``at`` (a fraction of the stream's events when below 1, otherwise an
absolute event index) and is abrupt when ``width`` is 0, or ramps in linearly over ``width``
(same units as ``at``). The ramp is a per-event strength ``alpha`` in [0, 1]: continuous drifts
scale their effect by it, mixture drifts (correlation, prior, concept) apply to a random
``alpha`` share of events. Drifts act on benign callers and batch jobs only: the canary, retries
(which repeat an earlier payload) and attackers are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.traffic.datasets import Dataset

_DEFAULT_COVARIATE = {
    "tabular": ("amount", "avg_amount_30d", "distance_km", "merchant_risk"),
    "digits": ("f19", "f20", "f27", "f28", "f35", "f36", "f43", "f44"),
}
_DEFAULT_CORRELATION = {
    "tabular": ("age", "income"),
    "digits": ("f20", "f28", "f36", "f44"),
}


def _position(value: float, n_events: int) -> int:
    if value < 0:
        raise ValueError(f"drift position must be >= 0, got {value}")
    return int(round(value * n_events)) if value < 1 else int(value)


@dataclass(frozen=True)
class Drift:
    """Common timing of every drift (see module docstring)."""

    at: float = 0.5
    width: float = 0.0
    kind: ClassVar[str] = "drift"

    def span(self, n_events: int) -> tuple[int, int]:
        """First affected index and the index where full strength is reached."""
        start = _position(self.at, n_events)
        return start, start + (_position(self.width, n_events) if self.width > 0 else 0)

    def alpha(self, idx: np.ndarray, n_events: int) -> np.ndarray:
        """Drift strength in [0, 1] for the events at global indices ``idx``."""
        start, full = self.span(n_events)
        if full <= start:
            return (idx >= start).astype(np.float64)
        return np.clip((idx - start + 1) / (full - start), 0.0, 1.0)

    def affected_features(self, dataset: Dataset) -> tuple[str, ...]:
        return ()

    def describe(self, dataset: Dataset) -> str:
        return self.kind


@dataclass(frozen=True)
class CovariateDrift(Drift):
    """Shift the mean of some features by ``shift`` standard deviations and/or scale their spread.

    Acts on the latent (tabular: before the natural-unit maps, so amounts stay positive and
    ratios stay in [0, 1]; digits: on pixel intensities, then clipped to [0, 1]).
    """

    features: tuple[str, ...] | None = None
    shift: float = 1.0
    scale: float = 1.0
    kind: ClassVar[str] = "covariate"

    def affected_features(self, dataset: Dataset) -> tuple[str, ...]:
        return self.features or _DEFAULT_COVARIATE[dataset.name]

    def apply_latent(self, Z: np.ndarray, alpha: np.ndarray, dataset: Dataset) -> None:
        cols = [dataset.latent_index(f) for f in self.affected_features(dataset)]
        a = alpha[:, None]
        mean, std = dataset.latent_mean[cols], dataset.latent_std[cols]
        block = Z[:, cols]
        if self.scale != 1.0:
            block = mean + (block - mean) * (1.0 + a * (self.scale - 1.0))
        Z[:, cols] = block + a * self.shift * std

    def describe(self, dataset: Dataset) -> str:
        how = "abrupt" if self.width <= 0 else "gradual"
        return (f"{how} covariate drift of {', '.join(self.affected_features(dataset))}: "
                f"mean +{self.shift:g} sd, spread x{self.scale:g}")  # fmt: skip


@dataclass(frozen=True)
class CorrelationDrift(Drift):
    """Change how features co-vary while every marginal stays the same.

    ``features[0]`` is the anchor. On a Gaussian latent (tabular), each other feature is redrawn
    with correlation ``target_corr`` to the anchor (class-conditionally, unit variance, so the
    marginals are unchanged). Otherwise (digits) the other features are shuffled jointly across the
    drifted events of a chunk, which keeps marginals and breaks their link to the rest.
    """

    features: tuple[str, ...] | None = None
    target_corr: float = -0.5
    kind: ClassVar[str] = "correlation"

    def __post_init__(self) -> None:
        if not -0.99 <= self.target_corr <= 0.99:
            raise ValueError(f"target_corr must be in [-0.99, 0.99], got {self.target_corr}")

    def affected_features(self, dataset: Dataset) -> tuple[str, ...]:
        feats = self.features or _DEFAULT_CORRELATION[dataset.name]
        if len(feats) < 2:
            raise ValueError("CorrelationDrift needs an anchor feature and at least one other")
        return feats

    def apply_latent(
        self, Z: np.ndarray, y: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, dataset: Dataset
    ) -> None:
        feats = self.affected_features(dataset)
        hit = rng.random(len(alpha)) < alpha
        rows = np.flatnonzero(hit)
        if rows.size == 0:
            return
        anchor = dataset.latent_index(feats[0])
        others = [dataset.latent_index(f) for f in feats[1:]]
        if dataset.gaussian_latent:
            means = getattr(dataset, "class_means")  # noqa: B009
            r = self.target_corr
            za = Z[rows, anchor] - means[y[rows], anchor]
            for j in others:
                e = rng.standard_normal(rows.size)
                Z[rows, j] = means[y[rows], j] + r * za + np.sqrt(1.0 - r * r) * e
        else:
            perm = rows[rng.permutation(rows.size)]
            cols = np.asarray(others, dtype=np.intp)
            Z[np.ix_(rows, cols)] = Z[np.ix_(perm, cols)]

    def describe(self, dataset: Dataset) -> str:
        f = self.affected_features(dataset)
        return f"correlation-only drift between {f[0]} and {', '.join(f[1:])} (marginals unchanged)"


@dataclass(frozen=True)
class PriorShift(Drift):
    """The class mix changes (to ``prior``; default: tilted towards the later classes)."""

    prior: tuple[float, ...] | None = None
    kind: ClassVar[str] = "prior"

    def target(self, dataset: Dataset) -> np.ndarray:
        if self.prior is not None:
            p = np.asarray(self.prior, dtype=np.float64)
            if p.shape != (dataset.n_classes,) or np.any(p < 0) or p.sum() <= 0:
                raise ValueError(f"prior must be {dataset.n_classes} non-negative weights")
        else:
            p = dataset.prior * np.exp(np.linspace(-1.0, 1.0, dataset.n_classes))
        return p / p.sum()  # type: ignore[no-any-return]

    def apply_priors(self, P: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, dataset: Dataset) -> None:
        hit = rng.random(len(alpha)) < alpha
        P[hit] = self.target(dataset)

    def describe(self, dataset: Dataset) -> str:
        return f"prior shift to {np.round(self.target(dataset), 3).tolist()}"


@dataclass(frozen=True)
class ConceptDrift(Drift):
    """Labels change for a region of input space, so the model's error rate rises.

    The region is ``feature`` above its ``quantile`` (reference data), or the true class in
    ``classes``; within it a ``fraction`` of events get the next class as label. Inputs and
    predictions do not change.
    """

    feature: str | None = None
    quantile: float = 0.5
    classes: tuple[int, ...] | None = None
    fraction: float = 0.6
    kind: ClassVar[str] = "concept"

    def region(self, X: np.ndarray, y: np.ndarray, dataset: Dataset) -> np.ndarray:
        if self.classes is not None:
            return np.isin(y, self.classes)
        feature = self.feature or ("amount" if dataset.name == "tabular" else "f36")
        j = dataset.feature_names.index(feature)
        return X[:, j] > np.quantile(dataset.reference_X[:, j], self.quantile)  # type: ignore[no-any-return]

    def apply_labels(
        self, X: np.ndarray, y: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, dataset: Dataset
    ) -> np.ndarray:
        flip = self.region(X, y, dataset) & (rng.random(len(y)) < alpha * self.fraction)
        return np.where(flip, (y + 1) % dataset.n_classes, y)

    def affected_features(self, dataset: Dataset) -> tuple[str, ...]:
        if self.classes is not None:
            return ()
        return (self.feature or ("amount" if dataset.name == "tabular" else "f36"),)

    def describe(self, dataset: Dataset) -> str:
        where = (f"true class in {list(self.classes)}" if self.classes is not None
                 else f"{self.affected_features(dataset)[0]} above its {self.quantile:g} quantile")  # fmt: skip
        return f"concept drift: {self.fraction:.0%} of labels where {where} move to the next class"
