"""Feature schemas and columnar micro-batches: from decoded events to :class:`EventBatch`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from pipeline.decode import class_key
from pipeline.events import EventBatch, FeatureSchema, PredictionEvent, RouteKey, summarize_probabilities


def learn_schema(event: PredictionEvent) -> FeatureSchema:
    """The feature layout of a route, from its first event.

    Strings are categorical; numbers, booleans and nulls are numeric.

    >>> from pipeline.decode import decode_prediction
    >>> ev = decode_prediction(b'{"event_id":"1","ts":0,"model":"m","prediction":1,'
    ...                        b'"features":{"age":3,"country":"fr","vip":true}}')
    >>> learn_schema(ev)
    FeatureSchema(numeric=('age', 'vip'), categorical=('country',), from_array=False, classes=())
    """
    f = event.features
    classes = tuple(event.probabilities) if event.probabilities else ()
    if isinstance(f, list):
        return FeatureSchema(numeric=tuple(f"f{i}" for i in range(len(f))), from_array=True, classes=classes)
    numeric = tuple(k for k, v in f.items() if not isinstance(v, str))
    categorical = tuple(k for k, v in f.items() if isinstance(v, str))
    return FeatureSchema(numeric=numeric, categorical=categorical, from_array=False, classes=classes)


def describe_features(event: PredictionEvent) -> str:
    """A short signature of an event's feature layout, for data-quality notices."""
    f = event.features
    if isinstance(f, list):
        return f"array[{len(f)}]"
    return "object{" + ",".join(sorted(f)) + "}"


def conforms(schema: FeatureSchema, event: PredictionEvent, names: frozenset[str]) -> bool:
    """Whether the event has exactly the schema's features (``names``: the schema's feature names)."""
    f = event.features
    if schema.from_array:
        return isinstance(f, list) and len(f) == len(schema.numeric)
    return isinstance(f, dict) and f.keys() == names


def _numeric(value: object) -> float:
    if value is None or isinstance(value, str):
        return np.nan
    return float(value)  # type: ignore[arg-type]


def build_batch(route: RouteKey, schema: FeatureSchema, events: list[PredictionEvent]) -> EventBatch:
    """Columns of ``events`` laid out by ``schema``; non-conforming events are padded with missing values."""
    n = len(events)
    d = len(schema.numeric)
    if schema.from_array:
        rows = [f if isinstance(f, list) and len(f) == d else _fit(f if isinstance(f, list) else [], d)
                for f in (e.features for e in events)]
        X = np.array(rows, dtype=np.float64).reshape(n, d)
        C = np.empty((n, 0), dtype=object)
    else:
        names = schema.numeric
        feats = [e.features for e in events]
        values = _columns(feats, names)
        if values is None:  # an event lacks a feature or is not an object: missing values instead
            values = [[f.get(k) for k in names] if isinstance(f, dict) else [None] * d for f in feats]
        try:  # one conversion for the batch: None becomes NaN, booleans 0/1
            X = np.array(values, dtype=np.float64).reshape(n, d)
        except (TypeError, ValueError):  # a string where a number was learned: per-value fallback
            X = np.array([[_numeric(v) for v in row] for row in values], dtype=np.float64).reshape(n, d)
        k = len(schema.categorical)
        C = np.empty((n, k), dtype=object)
        if k:
            cats = _columns(feats, schema.categorical)
            if cats is not None and set(map(type, chain.from_iterable(cats))) <= _CATEGORY_TYPES:
                C[:] = cats  # every value already a string or missing: nothing to convert
            else:
                for i, f in enumerate(feats):
                    C[i] = [_category(f.get(c)) if isinstance(f, dict) else None for c in schema.categorical]
    probs = [e.probabilities for e in events]
    P = _probability_matrix(probs)
    conf, margin, ent = summarize_probabilities(P)
    aligned = _aligned_probabilities(probs, schema.classes)
    predictions = [class_key(e.prediction) or "" for e in events]
    value = np.array([_numeric(e.prediction) for e in events], dtype=np.float64)
    return EventBatch(
        route=route,
        schema=schema,
        event_ids=[e.event_id for e in events],
        ts=np.array([e.ts for e in events], dtype=np.float64),
        client_ids=[e.client_id for e in events],
        X=X,
        C=C,
        prediction=predictions,
        prediction_value=value,
        confidence=conf,
        margin=margin,
        entropy=ent,
        label=[class_key(e.label) for e in events],
        payloads=[e.raw for e in events],
        probabilities=aligned,
    )


def _probability_matrix(probs: list[dict[str, float] | None]) -> np.ndarray:
    """Rows of class probabilities, padded with NaN (events without probabilities are all NaN)."""
    n = len(probs)
    width = max((len(p) for p in probs if p), default=0)
    if width == 0:
        return np.full((n, 0), np.nan)
    if all(p is not None and len(p) == width for p in probs):
        values = chain.from_iterable(p.values() for p in probs if p is not None)
        return np.fromiter(values, dtype=np.float64, count=n * width).reshape(n, width)
    P = np.full((n, width), np.nan)
    for i, p in enumerate(probs):
        if p:
            P[i, : len(p)] = list(p.values())
    return P


def _aligned_probabilities(probs: list[dict[str, float] | None], classes: tuple[str, ...]) -> np.ndarray:
    """One column per class of the route (``NaN`` where an event did not give that class).

    >>> _aligned_probabilities([{"a": 0.9, "b": 0.1}, {"b": 0.3, "a": 0.7}, None], ("a", "b")).tolist()
    [[0.9, 0.1], [0.7, 0.3], [nan, nan]]
    """
    n, k = len(probs), len(classes)
    if k == 0:
        return np.empty((n, 0))
    rows = _columns(probs, classes)  # fast path: every event names the route's classes
    if rows is not None:
        return np.array(rows, dtype=np.float64).reshape(n, k)
    return np.array([[p.get(c, np.nan) for c in classes] if p else [np.nan] * k for p in probs],
                    dtype=np.float64).reshape(n, k)


_CATEGORY_TYPES = frozenset({str, type(None)})


def _columns(items: Sequence[Any], keys: tuple[str, ...]) -> list[Any] | None:
    """``[[item[k] for k in keys] for item in items]`` (rows as tuples or lists), or None if an item
    is not a dict or lacks one of the keys. Uses one C-level getter per item.

    >>> _columns([{"a": 1, "b": 2}, {"b": 3, "a": 4}], ("a", "b")), _columns([{"a": 1}], ("a", "b"))
    ([(1, 2), (4, 3)], None)
    """
    if not keys:
        return [()] * len(items)
    if not all(type(item) is dict for item in items):
        return None
    get: Callable[[Any], Any]
    if len(keys) == 1:
        one = keys[0]
        get = lambda item: (item[one],)  # noqa: E731  (itemgetter of one key returns a bare value)
    else:
        get = itemgetter(*keys)
    try:
        return list(map(get, items))
    except KeyError:
        return None


def _fit(values: list[float | None], d: int) -> list[float | None]:
    return (list(values) + [None] * d)[:d]


def _category(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
