"""Simulated input distributions: a tabular risk dataset in natural units, and scikit-learn's digits.

Every dataset draws inputs in two steps: a *latent* matrix ``Z`` (where drifts act, in standard
units) and the logged feature matrix ``X = finalize(Z)`` in natural units, rounded the way a real
client would send them. Categorical features live in ``X`` as integer codes; :meth:`Dataset.payloads`
turns rows into wire-format ``features`` values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def sample_classes(rng: np.random.Generator, priors: np.ndarray) -> np.ndarray:
    """Draw one class per row of ``priors`` (rows are probability vectors), vectorised."""
    cum = np.cumsum(priors, axis=1)
    u = rng.random(priors.shape[0]) * cum[:, -1]
    return np.minimum((u[:, None] > cum).sum(axis=1), priors.shape[1] - 1)


class Dataset(ABC):
    """Shape, ranges and sampling of one simulated model's inputs."""

    name: str
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    #: column index -> category names (values in ``X`` are codes into these)
    categorical: dict[int, tuple[str, ...]]
    #: ``True`` when ``features`` go on the wire as an array (``f0..fN-1``)
    array_features: bool
    #: ``True`` when the latent is class-conditionally Gaussian with unit variance
    gaussian_latent: bool
    latent_names: tuple[str, ...]
    prior: np.ndarray
    hard_low: np.ndarray
    hard_high: np.ndarray
    #: decimals per column; 0 means an integer column
    decimals: np.ndarray

    # reference statistics, filled by ``_calibrate``
    range_low: np.ndarray
    range_high: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    latent_mean: np.ndarray
    latent_std: np.ndarray
    reference_X: np.ndarray
    reference_y: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def numeric_idx(self) -> np.ndarray:
        """Columns that are not categorical (what attackers perturb continuously)."""
        return np.array([j for j in range(self.n_features) if j not in self.categorical], dtype=np.intp)

    @abstractmethod
    def sample_latent(self, rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
        """Latent inputs for classes ``y``, shape ``(len(y), len(latent_names))``."""

    @abstractmethod
    def finalize(self, rng: np.random.Generator, Z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Map latents to the logged feature matrix (natural units, projected)."""

    def sample(self, rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
        """Natural inputs of classes ``y`` (no drift)."""
        return self.finalize(rng, self.sample_latent(rng, y), y)

    def training_data(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and true classes the simulated model is fitted on."""
        y = sample_classes(rng, np.tile(self.prior, (n, 1)))
        return self.sample(rng, y), y

    def project(self, X: np.ndarray) -> np.ndarray:
        """Clip to the hard bounds and round like a client would (codes become integers)."""
        X = np.clip(np.asarray(X, dtype=np.float64), self.hard_low, self.hard_high)
        out = np.empty_like(X)
        for d in np.unique(self.decimals):
            cols = self.decimals == d
            out[:, cols] = np.round(X[:, cols], int(d))
        return out

    def latent_index(self, feature: str) -> int:
        """Latent column that drives ``feature``."""
        try:
            return self.latent_names.index(feature)
        except ValueError:
            raise ValueError(f"{self.name}: feature {feature!r} has no latent (known: {self.latent_names})") from None

    def payloads(self, X: np.ndarray) -> list[Any]:
        """Wire-format ``features`` values for the rows of ``X``."""
        if self.array_features:
            dec = int(self.decimals.max())
            return np.round(X, dec).tolist()  # type: ignore[no-any-return]
        cols: list[list[Any]] = []
        for j in range(self.n_features):
            if j in self.categorical:
                names = np.array(self.categorical[j], dtype=object)
                cols.append(names[X[:, j].astype(np.intp)].tolist())
            elif self.decimals[j] == 0:
                cols.append(X[:, j].astype(np.int64).tolist())
            else:
                cols.append(np.round(X[:, j], int(self.decimals[j])).tolist())
        return list(map(dict, map(zip, repeat(self.feature_names), zip(*cols, strict=True))))

    def to_matrix(self, features: Sequence[Any]) -> np.ndarray:
        """Inverse of :meth:`payloads`: wire ``features`` values back to the feature matrix."""
        if self.array_features:
            return np.asarray(features, dtype=np.float64)
        codes = {j: {c: k for k, c in enumerate(cats)} for j, cats in self.categorical.items()}
        names = self.feature_names
        return np.array([[codes[j][f[n]] if j in codes else f[n] for j, n in enumerate(names)] for f in features],
                        dtype=np.float64)  # fmt: skip

    def _calibrate(self, rng: np.random.Generator, n: int = 20000) -> None:
        y = sample_classes(rng, np.tile(self.prior, (n, 1)))
        Z = self.sample_latent(rng, y)
        X = self.finalize(rng, Z, y)
        self.latent_mean = Z.mean(axis=0)
        self.latent_std = np.maximum(Z.std(axis=0), 0.05)
        self.range_low = X.min(axis=0)
        self.range_high = X.max(axis=0)
        q25, q50, q75 = np.percentile(X, [25, 50, 75], axis=0)
        self.center = q50
        self.scale = np.maximum((q75 - q25) / 1.349, np.maximum(X.std(axis=0) * 0.25, 1e-3))
        self.reference_X = X
        self.reference_y = y


# --------------------------------------------------------------------------------------------
# tabular: a three-class transaction risk model
# --------------------------------------------------------------------------------------------

# name, latent->natural map, decimals, hard bounds, riskiness direction
_TAB_NUMERIC: tuple[tuple[str, int, float, float, float], ...] = (
    # name, decimals, low, high, risk direction (latent mean shift sign for risky classes)
    ("amount", 2, 0.01, 1e6, 1.0),
    ("account_age_days", 0, 0, 20000, -1.0),
    ("age", 0, 18, 99, -0.4),
    ("income", 0, 0, 5e6, -0.6),
    ("credit_score", 0, 300, 850, -1.0),
    ("n_tx_24h", 0, 0, 500, 0.8),
    ("n_tx_7d", 0, 0, 2000, 0.4),
    ("avg_amount_30d", 2, 0.01, 1e6, 0.1),
    ("amount_to_avg_ratio", 4, 0, 1e4, 0.0),  # derived: amount / avg_amount_30d
    ("distance_km", 1, 0, 20000, 0.8),
    ("session_seconds", 1, 0, 86400, -0.3),
    ("failed_logins_7d", 0, 0, 100, 0.9),
    ("device_trust", 4, 0, 1, -0.9),
    ("utilization", 4, 0, 1, 0.7),
    ("merchant_risk", 4, 0, 1, 0.8),
    ("days_since_last_tx", 2, 0, 3650, 0.3),
)
_TAB_CATEGORICAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("channel", ("web", "app", "pos", "phone")),
    ("region", ("na", "eu", "apac", "latam")),
)
# P(category | class) for channel and region, rows = classes
_CHANNEL_GIVEN_CLASS = np.array([[0.35, 0.42, 0.18, 0.05], [0.40, 0.30, 0.15, 0.15], [0.52, 0.25, 0.05, 0.18]])
_REGION_GIVEN_CLASS = np.array([[0.42, 0.30, 0.20, 0.08], [0.38, 0.28, 0.22, 0.12], [0.33, 0.25, 0.24, 0.18]])
_TAB_CORRELATIONS: tuple[tuple[str, str, float], ...] = (
    ("amount", "avg_amount_30d", 0.6),
    ("age", "income", 0.45),
    ("income", "credit_score", 0.35),
    ("n_tx_24h", "n_tx_7d", 0.7),
    ("age", "account_age_days", 0.3),
    ("credit_score", "utilization", -0.45),
    ("distance_km", "device_trust", -0.2),
)


def nearest_correlation(R: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """A positive-definite correlation matrix close to ``R`` (eigenvalue clipping)."""
    w, V = np.linalg.eigh((R + R.T) / 2)
    R2 = (V * np.maximum(w, floor)) @ V.T
    d = np.sqrt(np.diag(R2))
    return R2 / np.outer(d, d)


class TabularDataset(Dataset):
    """Sixteen numeric features in natural units plus two categoricals; classes approve/review/decline.

    Latents are Gaussian with a fixed correlation structure and class-dependent means (risky
    classes shift along a "riskiness" direction, with class-specific twists so the three classes
    are not collinear). Natural units come from log-normal, affine, logistic and count maps.
    """

    name = "tabular"
    classes = ("approve", "review", "decline")
    array_features = False
    gaussian_latent = True

    def __init__(self, model_seed: int = 0) -> None:
        rng = np.random.default_rng([model_seed, 101])
        numeric_names = tuple(n for n, *_ in _TAB_NUMERIC)
        self.feature_names = numeric_names + tuple(n for n, _ in _TAB_CATEGORICAL)
        d = len(numeric_names)
        self.categorical = {d + k: cats for k, (_, cats) in enumerate(_TAB_CATEGORICAL)}
        self.latent_names = tuple(n for n in numeric_names if n != "amount_to_avg_ratio")
        self.prior = np.array([0.70, 0.18, 0.12])
        self.decimals = np.array([dec for _, dec, *_ in _TAB_NUMERIC] + [0, 0])
        self.hard_low = np.array([lo for _, _, lo, _, _ in _TAB_NUMERIC] + [0, 0], dtype=np.float64)
        self.hard_high = np.array(
            [hi for _, _, _, hi, _ in _TAB_NUMERIC] + [len(c) - 1 for _, c in _TAB_CATEGORICAL], dtype=np.float64
        )
        k = len(self.latent_names)
        R = np.eye(k)
        for a, b, r in _TAB_CORRELATIONS:
            i, j = self.latent_names.index(a), self.latent_names.index(b)
            R[i, j] = R[j, i] = r
        self.corr = nearest_correlation(R)
        self.chol = np.linalg.cholesky(self.corr)
        risk = np.array([r for n, _, _, _, r in _TAB_NUMERIC if n != "amount_to_avg_ratio"])
        strength = rng.uniform(0.6, 1.0, size=k)
        self.class_means = np.zeros((3, k))
        self.class_means[1] = 0.55 * risk * strength
        self.class_means[2] = 1.05 * risk * strength
        li = self.latent_names.index
        # "review" is about unusual amounts and long sessions; "decline" about account takeover signs
        self.class_means[1, li("amount")] += 0.7
        self.class_means[1, li("session_seconds")] += 0.6
        self.class_means[2, li("failed_logins_7d")] += 0.8
        self.class_means[2, li("device_trust")] -= 0.5
        self._calibrate(np.random.default_rng([model_seed, 102]))

    def sample_latent(self, rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
        eps = rng.standard_normal((len(y), len(self.latent_names)))
        # einsum, not matmul: a product this small is slower through a multi-threaded BLAS on a busy host
        return self.class_means[y] + np.einsum("ij,kj->ik", eps, self.chol)  # type: ignore[no-any-return]

    def finalize(self, rng: np.random.Generator, Z: np.ndarray, y: np.ndarray) -> np.ndarray:
        n = Z.shape[0]
        li = self.latent_names.index
        X = np.empty((n, self.n_features))
        z = {name: Z[:, li(name)] for name in self.latent_names}
        X[:, 0] = np.exp(3.6 + 1.0 * z["amount"])
        X[:, 1] = np.exp(5.5 + 1.0 * z["account_age_days"])
        X[:, 2] = 41.0 + 12.0 * z["age"]
        X[:, 3] = np.round(np.exp(10.8 + 0.5 * z["income"]) / 100.0) * 100.0
        X[:, 4] = 690.0 + 55.0 * z["credit_score"]
        X[:, 5] = np.maximum(np.exp(0.8 + 0.8 * z["n_tx_24h"]) - 1.0, 0.0)
        X[:, 6] = np.maximum(np.exp(2.3 + 0.6 * z["n_tx_7d"]), np.round(X[:, 5]))
        X[:, 7] = np.exp(3.7 + 0.7 * z["avg_amount_30d"])
        X[:, 9] = np.exp(2.0 + 1.2 * z["distance_km"])
        X[:, 10] = np.exp(4.5 + 0.8 * z["session_seconds"])
        X[:, 11] = np.maximum(1.5 * z["failed_logins_7d"] - 1.0, 0.0)
        X[:, 12] = _sigmoid(1.2 + 1.1 * z["device_trust"])
        X[:, 13] = _sigmoid(-0.5 + 1.0 * z["utilization"])
        X[:, 14] = _sigmoid(-2.0 + 0.9 * z["merchant_risk"])
        X[:, 15] = np.exp(0.5 + 1.1 * z["days_since_last_tx"])
        X[:, 16] = sample_classes(rng, _CHANNEL_GIVEN_CLASS[y])
        X[:, 17] = sample_classes(rng, _REGION_GIVEN_CLASS[y])
        X = self.project(X)
        X[:, 8] = np.round(X[:, 0] / X[:, 7], 4)
        return X


# --------------------------------------------------------------------------------------------
# digits: scikit-learn's bundled 8x8 handwritten digits
# --------------------------------------------------------------------------------------------


class DigitsDataset(Dataset):
    """64 pixel intensities in [0, 1] from ``sklearn.datasets.load_digits``.

    A benign input is a real digit with a small random brightness change and pixel noise, so
    inputs rarely repeat exactly. The latent is the pixel image itself (before clipping).
    """

    name = "digits"
    classes = tuple(str(i) for i in range(10))
    array_features = True
    gaussian_latent = False

    def __init__(self, model_seed: int = 0, noise: float = 0.04) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images = np.asarray(digits.data, dtype=np.float64) / 16.0
        self.targets = np.asarray(digits.target, dtype=np.intp)
        self.noise = noise
        self.feature_names = tuple(f"f{i}" for i in range(64))
        self.latent_names = self.feature_names
        self.categorical = {}
        self.prior = np.bincount(self.targets, minlength=10) / len(self.targets)
        self.decimals = np.full(64, 3)
        self.hard_low = np.zeros(64)
        self.hard_high = np.ones(64)
        order = np.argsort(self.targets, kind="stable")
        self._by_class = order
        counts = np.bincount(self.targets, minlength=10)
        self._class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._class_count = counts
        self._calibrate(np.random.default_rng([model_seed, 201]))

    def sample_latent(self, rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
        pick = self._class_start[y] + (rng.random(len(y)) * self._class_count[y]).astype(np.intp)
        base = self.images[self._by_class[pick]]
        gain = 1.0 + 0.06 * rng.standard_normal((len(y), 1))
        return base * gain + self.noise * rng.standard_normal(base.shape)

    def finalize(self, rng: np.random.Generator, Z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.project(Z)

    def training_data(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The real digits (the model is trained on the clean images)."""
        return self.images, self.targets


@lru_cache(maxsize=8)
def get_dataset(name: str, model_seed: int = 0) -> Dataset:
    """The (cached) dataset called ``name`` (``"tabular"`` or ``"digits"``)."""
    if name == "tabular":
        return TabularDataset(model_seed)
    if name == "digits":
        return DigitsDataset(model_seed)
    raise ValueError(f"unknown dataset {name!r}; expected 'tabular' or 'digits'")
