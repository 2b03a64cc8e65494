"""The simulated model server: a softmax classifier fitted once on generated data.

The model is a scikit-learn ``LogisticRegression`` fitted on a reference sample (tabular: after a
``log1p`` of the skewed columns, standardisation and one-hot categoricals), then evaluated with
plain numpy so that scoring a chunk costs one matrix product. Attack generators query it through
:meth:`SimModel.predict_proba`, exactly as a black-box caller would.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.traffic.datasets import Dataset, get_dataset

_LOG_COLUMNS = {
    "amount", "account_age_days", "income", "n_tx_24h", "n_tx_7d", "avg_amount_30d",
    "amount_to_avg_ratio", "distance_km", "session_seconds", "failed_logins_7d", "days_since_last_tx",
}  # fmt: skip


class SimModel:
    """A fitted softmax classifier over a :class:`Dataset`'s feature matrix."""

    def __init__(self, dataset: Dataset, model_seed: int = 0, n_train: int = 8000, C: float = 1.0) -> None:
        from sklearn.linear_model import LogisticRegression

        self.dataset = dataset
        self.classes = dataset.classes
        self._num = dataset.numeric_idx
        self._log = np.array([dataset.feature_names[j] in _LOG_COLUMNS for j in self._num])
        self._cat = sorted(dataset.categorical)
        X, y = dataset.training_data(np.random.default_rng([model_seed, 301]), n_train)
        T = self._numeric_block(X)
        self._mu = T.mean(axis=0)
        self._sd = np.where(T.std(axis=0) > 1e-9, T.std(axis=0), 1.0)
        F = self.transform(X)
        clf = LogisticRegression(C=C, max_iter=2000)
        clf.fit(F, y)
        self.coef = np.asarray(clf.coef_, dtype=np.float64)
        self.intercept = np.asarray(clf.intercept_, dtype=np.float64)
        self.train_accuracy = float(np.mean(self.predict(X) == y))

    def _numeric_block(self, X: np.ndarray) -> np.ndarray:
        T = np.asarray(X[:, self._num], dtype=np.float64)
        if self._log.any():
            T = T.copy()
            T[:, self._log] = np.log1p(np.maximum(T[:, self._log], 0.0))
        return T

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Model features: scaled numerics followed by one-hot categoricals."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        parts = [(self._numeric_block(X) - self._mu) / self._sd]
        for j in self._cat:
            k = len(self.dataset.categorical[j])
            codes = np.clip(np.round(X[:, j]), 0, k - 1).astype(np.intp)
            parts.append(np.eye(k)[codes])
        return np.hstack(parts)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(n, n_classes)``, for the feature matrix ``X``."""
        # einsum, not matmul: avoids multi-threaded BLAS start-up on small chunks on a busy host
        S = np.einsum("ij,kj->ik", self.transform(X), self.coef) + self.intercept
        S -= S.max(axis=1, keepdims=True)
        E = np.exp(S)
        return E / E.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Index of the most probable class for each row."""
        return np.argmax(self.predict_proba(X), axis=1)  # type: ignore[no-any-return]


@lru_cache(maxsize=8)
def get_model(dataset: str, model_seed: int = 0) -> SimModel:
    """The (cached) simulated model for ``dataset``."""
    return SimModel(get_dataset(dataset, model_seed), model_seed)
