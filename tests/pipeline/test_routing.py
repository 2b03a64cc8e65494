"""Batches of one route: class probabilities aligned by class name across events and batches."""

from __future__ import annotations

import numpy as np

from pipeline.decode import decode_prediction
from pipeline.events import RouteKey
from pipeline.routing import build_batch, learn_schema


def _event(i: int, probs: object) -> bytes:
    import orjson

    return orjson.dumps({"event_id": f"e{i}", "ts": float(i), "model": "m", "features": [1.0, 2.0],
                         "prediction": "cat", "probabilities": probs})


def test_probabilities_are_columns_per_class_whatever_the_key_order() -> None:
    first = decode_prediction(_event(0, {"cat": 0.7, "dog": 0.2, "eel": 0.1}))
    schema = learn_schema(first)
    assert schema.classes == ("cat", "dog", "eel")
    events = [first,
              decode_prediction(_event(1, {"eel": 0.5, "cat": 0.25, "dog": 0.25})),
              decode_prediction(_event(2, {"cat": 0.6, "dog": 0.4})),  # a class missing
              decode_prediction(_event(3, None))]
    batch = build_batch(RouteKey("m", None, 0), schema, events)
    P = batch.probabilities
    assert P.shape == (4, 3)
    np.testing.assert_array_equal(P[:3], [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.6, 0.4, np.nan]])
    assert np.isnan(P[3]).all()
    # the summaries do not depend on the alignment
    assert batch.confidence[1] == 0.5 and np.isnan(batch.confidence[3])


def test_array_probabilities_are_named_by_position() -> None:
    ev = decode_prediction(_event(0, [0.1, 0.9]))
    schema = learn_schema(ev)
    assert schema.classes == ("0", "1")
    assert build_batch(RouteKey("m", None, 0), schema, [ev]).probabilities.tolist() == [[0.1, 0.9]]
