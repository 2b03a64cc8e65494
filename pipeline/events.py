"""Typed records that flow between the pipeline's stages.

The hot path is columnar: after decoding, events of one route (model, version, partition) are
gathered into an :class:`EventBatch` of numpy arrays, and detectors consume whole batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as it came from a source, before decoding.

    ``stream`` is ``"predictions"`` or ``"labels"``; ``source`` names where it came from (a Kafka
    topic or a file path) and ``partition``/``offset`` locate it there (a file has partition 0 and
    its line number as offset). ``scope`` picks the engine state the message belongs to; by default
    its partition. A Kafka range replay merges every partition into scope 0, as a file replay does.
    """

    stream: str
    source: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    scope: int | None = None


@dataclass(frozen=True, slots=True)
class RouteKey:
    """Where detector state lives: per model, model version and source partition."""

    model: str
    model_version: str | None
    partition: int = 0

    @property
    def label(self) -> str:
        v = self.model_version if self.model_version is not None else "-"
        return f"{self.model}@{v}#p{self.partition}"


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    """The feature layout of a route, learned from its first event.

    ``numeric`` features (numbers, booleans, nulls) become columns of ``EventBatch.X``;
    ``categorical`` features (strings) become columns of ``EventBatch.C``.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    from_array: bool = False
    #: Class names of the probabilities, in the first event's order (columns of ``EventBatch.probabilities``).
    classes: tuple[str, ...] = ()

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    def signature(self) -> str:
        return "|".join(("A" if self.from_array else "O", ",".join(self.numeric), ",".join(self.categorical)))


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """A decoded, validated prediction-log event (one inference)."""

    event_id: str
    ts: float
    model: str
    model_version: str | None
    client_id: str | None
    features: dict[str, float | str | bool | None] | list[float | None]
    prediction: str | int | float
    probabilities: dict[str, float] | None
    label: str | int | float | None
    latency_ms: float | None
    raw: dict[str, Any]
    naive_ts: bool = False


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """A decoded delayed ground-truth message, joined to its prediction by ``event_id``."""

    event_id: str
    ts: float
    label: str | int | float | None
    model: str | None = None
    client_id: str | None = None


@dataclass(eq=False, slots=True)
class EventBatch:
    """A micro-batch of prediction events of one route, in stream order, as columns.

    ``X`` holds the numeric features (``NaN`` = missing), ``C`` the categorical ones (``None`` =
    missing). Output summaries are per event: ``confidence`` is the top class probability,
    ``margin`` the gap between the two top probabilities, ``entropy`` the Shannon entropy (nats);
    all ``NaN`` where the event carried no probabilities. ``probabilities`` holds the class
    probabilities themselves, one column per ``schema.classes`` (``NaN`` where absent).
    """

    route: RouteKey
    schema: FeatureSchema
    event_ids: list[str]
    ts: np.ndarray
    client_ids: list[str | None]
    X: np.ndarray
    C: np.ndarray
    prediction: list[str]
    prediction_value: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    label: list[str | None]
    payloads: list[dict[str, Any]] = field(default_factory=list)
    probabilities: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    def __len__(self) -> int:
        return len(self.event_ids)


@dataclass(eq=False, slots=True)
class OutcomeBatch:
    """Ground truth joined to predictions of one route: one row per labelled prediction.

    ``ts`` is the time the outcome became known (the label's ``ts``, or the prediction's for
    inline labels); ``error`` is 1.0 where the prediction was wrong and 0.0 where it was right.
    """

    route: RouteKey
    event_ids: list[str]
    ts: np.ndarray
    predicted_ts: np.ndarray
    error: np.ndarray

    def __len__(self) -> int:
        return len(self.event_ids)


def summarize_probabilities(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row confidence, margin and entropy of a probability matrix (rows may hold NaN).

    >>> c, m, h = summarize_probabilities(np.array([[0.7, 0.2, 0.1]]))
    >>> round(float(c[0]), 2), round(float(m[0]), 2)
    (0.7, 0.5)
    """
    P = np.asarray(P, dtype=np.float64)
    n = P.shape[0]
    if P.ndim != 2 or P.shape[1] == 0:
        nan = np.full(n, np.nan)
        return nan, nan.copy(), nan.copy()
    filled = np.where(np.isnan(P), 0.0, P)
    if P.shape[1] >= 2:
        top2 = -np.partition(-filled, 1, axis=1)[:, :2]
        conf, second = top2[:, 0], top2[:, 1]
    else:
        conf, second = filled[:, 0], np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(filled > 0, filled * np.log(filled), 0.0), axis=1)
    missing = np.all(np.isnan(P), axis=1)
    conf = np.where(missing, np.nan, conf)
    return conf, np.where(missing, np.nan, conf - second), np.where(missing, np.nan, ent)


def batch_from_arrays(
    X: np.ndarray,
    *,
    ts: np.ndarray | None = None,
    event_ids: list[str] | None = None,
    client_ids: list[str | None] | None = None,
    prediction: list[str] | None = None,
    probabilities: np.ndarray | None = None,
    labels: list[str | None] | None = None,
    route: RouteKey | None = None,
    schema: FeatureSchema | None = None,
    C: np.ndarray | None = None,
    start_index: int = 0,
) -> EventBatch:
    """Build an :class:`EventBatch` from arrays (for tests, benchmarks and generators).

    Missing pieces get neutral defaults: ids ``e<i>``, one event per second, no caller,
    predictions from the argmax of ``probabilities`` (or ``"0"``).

    >>> b = batch_from_arrays(np.zeros((3, 2)), probabilities=np.array([[0.9, 0.1]] * 3))
    >>> len(b), b.prediction[0], float(b.margin[0])
    (3, '0', 0.8)
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    idx = np.arange(start_index, start_index + n)
    if schema is None:
        schema = FeatureSchema(numeric=tuple(f"f{i}" for i in range(d)), from_array=True)
    if probabilities is not None:
        P = np.asarray(probabilities, dtype=np.float64)
        if not schema.classes:
            schema = replace(schema, classes=tuple(str(i) for i in range(P.shape[1])))
        conf, margin, ent = summarize_probabilities(P)
        if prediction is None:
            prediction = [str(int(i)) for i in np.argmax(np.where(np.isnan(P), -1, P), axis=1)]
    else:
        conf = margin = ent = np.full(n, np.nan)
    if prediction is None:
        prediction = ["0"] * n
    pv = np.array([_to_float(p) for p in prediction], dtype=np.float64)
    return EventBatch(
        route=route or RouteKey("model", None, 0),
        schema=schema,
        event_ids=event_ids if event_ids is not None else [f"e{i}" for i in idx],
        ts=np.asarray(ts, dtype=np.float64) if ts is not None else idx.astype(np.float64),
        client_ids=client_ids if client_ids is not None else [None] * n,
        X=X,
        C=C if C is not None else np.empty((n, 0), dtype=object),
        prediction=list(prediction),
        prediction_value=pv,
        confidence=conf,
        margin=margin,
        entropy=ent,
        label=labels if labels is not None else [None] * n,
        payloads=[],
        probabilities=P if probabilities is not None else np.empty((n, 0)),
    )


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
