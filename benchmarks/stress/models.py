"""Served models for the stress benchmark: real or realistic tabular data in natural units.

Independent of ``pipeline/traffic``: these are the benchmark's own models and row samplers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
from sklearn.datasets import load_breast_cancer, load_wine, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass
class ModelSpec:
    """One served model: its training pool, feature names, classes and fitted versions."""

    name: str
    X: np.ndarray
    y: np.ndarray
    features: list[str]
    classes: list[str]
    decimals: np.ndarray
    integer: np.ndarray
    nonneg: np.ndarray
    jitter: float
    versions: dict[str, object] = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.X.mean(axis=0))

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.X.std(axis=0) + 1e-12)

    def predict_proba(self, X: np.ndarray, version: str = "1") -> np.ndarray:
        """Class probabilities of ``version`` for rows in natural units (NaN imputed by the pool mean)."""
        X = np.where(np.isnan(X), self.mean, X)
        return np.asarray(self.versions[version].predict_proba(X))  # type: ignore[attr-defined]

    def sample(self, rng: np.random.Generator, n: int, class_probs: np.ndarray | None = None) -> tuple[
            np.ndarray, np.ndarray]:
        """``n`` natural-looking rows: a pool row of the drawn class plus small within-class jitter."""
        k = len(self.classes)
        probs = np.bincount(self.y, minlength=k) / len(self.y) if class_probs is None else class_probs
        y = rng.choice(k, size=n, p=probs)
        X = np.empty((n, self.X.shape[1]))
        for c in range(k):
            idx = np.flatnonzero(y == c)
            pool = np.flatnonzero(self.y == c)
            X[idx] = self.X[rng.choice(pool, size=len(idx))]
            if self.jitter > 0:
                sd = self.X[pool].std(axis=0)
                X[idx] += rng.normal(0.0, 1.0, (len(idx), X.shape[1])) * sd * self.jitter
        return self.finish(X), y

    def finish(self, X: np.ndarray) -> np.ndarray:
        """Apply the natural constraints: non-negative, integer columns, the data's decimals."""
        X = np.where(self.nonneg, np.maximum(X, 0.0), X)
        X = np.where(self.integer, np.round(X), X)
        out = np.empty_like(X)
        for j, d in enumerate(self.decimals):
            out[:, j] = np.round(X[:, j], int(d))
        return out


def _decimals(X: np.ndarray) -> np.ndarray:
    dec = np.zeros(X.shape[1], dtype=int)
    for j in range(X.shape[1]):
        for d in range(7):
            if np.allclose(np.round(X[:, j], d), X[:, j], atol=1e-9):
                dec[j] = d
                break
        else:
            dec[j] = 6
    return dec


def _spec(name: str, X: np.ndarray, y: np.ndarray, features: list[str], classes: list[str],
          jitter: float, make: object) -> ModelSpec:
    integer = np.all(np.equal(np.round(X), X), axis=0)
    spec = ModelSpec(name=name, X=X, y=y, features=features, classes=classes, decimals=_decimals(X),
                     integer=integer, nonneg=np.all(X >= 0, axis=0), jitter=jitter)
    rng = np.random.default_rng(7)
    spec.versions["1"] = make(0).fit(X, y)  # type: ignore[operator]
    boot = rng.choice(len(y), size=len(y))  # the canary version: retrained on a bootstrap sample
    spec.versions["2"] = make(1).fit(X[boot], y[boot])  # type: ignore[operator]
    return spec


def _loans_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Credit-risk-like table: skewed amounts, counts, categorical codes, bounded ratios."""
    Z, y = make_classification(n_samples=20000, n_features=10, n_informative=6, n_redundant=2,
                               weights=[0.82], flip_y=0.02, class_sep=0.9, random_state=11)
    cols = {
        "annual_income": np.round(np.exp(10.8 + 0.55 * Z[:, 0]), -2),
        "loan_amount": np.round(np.exp(9.2 + 0.8 * Z[:, 1]), 0),
        "open_accounts": np.floor(np.exp(1.6 + 0.45 * Z[:, 2])),
        "days_since_delinquency": np.round(np.exp(5.0 + 1.3 * Z[:, 3])),
        "utilization": np.round(1 / (1 + np.exp(-Z[:, 4])), 3),
        "age": np.clip(np.round(41 + 12 * Z[:, 5]), 18, 90),
        "region_code": np.digitize(Z[:, 6], [-1.0, -0.3, 0.3, 1.0]).astype(float),
        "employment_type": np.digitize(Z[:, 7], [-0.5, 0.6, 1.6]).astype(float),
        "debt_to_income": np.round(0.8 / (1 + np.exp(-Z[:, 8])), 3),
        "late_payments_12m": np.floor(np.maximum(Z[:, 9], 0) * 2.2),
    }
    return np.column_stack(list(cols.values())), y, list(cols)


@cache
def build_models() -> dict[str, ModelSpec]:
    """The three served models: ``oncology`` (binary, LR), ``wine`` (3 classes, RF), ``loans`` (binary, RF)."""
    bc = load_breast_cancer()
    # sklearn codes malignant as 0; serve it as "benign"/"malignant" with malignant the positive class.
    y_bc = 1 - bc.target
    onc = _spec("oncology", bc.data, y_bc, [str(f) for f in bc.feature_names], ["benign", "malignant"], 0.12,
                lambda s: make_pipeline(StandardScaler(), LogisticRegression(C=0.3 + 0.2 * s, max_iter=2000)))
    wd = load_wine()
    wine = _spec("wine", wd.data, wd.target, [str(f) for f in wd.feature_names],
                 ["cultivar_a", "cultivar_b", "cultivar_c"], 0.12,
                 lambda s: RandomForestClassifier(n_estimators=60, max_depth=6, random_state=s))
    X, y, names = _loans_data()
    loans = _spec("loans", X, y, names, ["repaid", "default"], 0.0,
                  lambda s: RandomForestClassifier(n_estimators=60, max_depth=8, min_samples_leaf=5,
                                                   random_state=s))
    return {m.name: m for m in (onc, wine, loans)}
