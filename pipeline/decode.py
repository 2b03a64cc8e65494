"""Decoding and validation of the v1 prediction-log contract and of label messages.

One function per stream, each returning a typed event or raising :class:`DecodeError` with a
reason a reviewer can read. Parsing uses orjson, which is strict JSON: ``NaN``/``Infinity``
literals, invalid UTF-8, and trailing garbage are all rejected.

>>> ev = decode_prediction(b'{"event_id":"a","ts":0,"model":"m","features":[1,null],"prediction":1}')
>>> ev.features, ev.prediction
([1, None], 1)
>>> decode_prediction(b'{"event_id":"a","ts":0,"model":"m","features":[NaN],"prediction":1}')
Traceback (most recent call last):
...
pipeline.decode.DecodeError: not valid JSON: NaN at char 47 (JSON has no NaN or Infinity; send null for a missing value)
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from pipeline.events import LabelEvent, PredictionEvent
from pipeline.timefmt import TimestampError, parse_ts

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: Largest number of features and probability classes accepted in one event.
MAX_FEATURES = 10_000
MAX_CLASSES = 10_000
PROBABILITY_SUM_TOLERANCE = 0.02


class DecodeError(ValueError):
    """A message that fails the contract; the message is the dead-letter reason."""


def _load_object(value: bytes, max_bytes: int) -> dict[str, Any]:
    if len(value) > max_bytes:
        raise DecodeError(f"message of {len(value)} bytes exceeds the {max_bytes}-byte limit")
    if not value.strip():
        raise DecodeError("empty message")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        token = _non_finite_token(value, exc.pos)
        if token:
            raise DecodeError(f"not valid JSON: {token} at char {exc.pos} (JSON has no NaN or Infinity; "
                              "send null for a missing value)") from None
        raise DecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"message must be a JSON object, got {type(obj).__name__}")
    return obj


def _non_finite_token(value: bytes, pos: int) -> str | None:
    """``NaN``, ``Infinity`` or ``-Infinity`` where the parser stopped, as many JSON writers emit them.

    >>> _non_finite_token(b'{"x": NaN}', 6)
    'NaN'
    """
    if pos > 0 and value.startswith(b"-Infinity", pos - 1):  # the parser stops after the sign
        return "-Infinity"
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        if value.startswith(token, pos):
            return token.decode()
    return None


def _string(obj: dict[str, Any], key: str, max_len: int, required: bool) -> str | None:
    value = obj.get(key)
    if type(value) is str and 0 < len(value) <= max_len:  # the common case, checked first
        return value
    if value is None:
        if key in obj:
            raise DecodeError(f"{key} must be a string, got null")
        if required:
            raise DecodeError(f"missing required field {key}")
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{key} must be a string, got {_type(value)}")
    if required and not value:
        raise DecodeError(f"{key} must not be empty")
    if len(value) > max_len:
        raise DecodeError(f"{key} is longer than {max_len} characters")
    return value


def _type(value: object) -> str:
    return {dict: "object", list: "array", bool: "boolean", str: "string", int: "integer",
            float: "number"}.get(type(value), type(value).__name__) if value is not None else "null"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_finite(value: float, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError(f"{where} is not a finite number")


def _ts(obj: dict[str, Any]) -> tuple[float, bool]:
    if "ts" not in obj:
        raise DecodeError("missing required field ts")
    try:
        return parse_ts(obj["ts"])
    except TimestampError as exc:
        raise DecodeError(str(exc)) from None


_ARRAY_ITEM_TYPES = frozenset({int, float, type(None)})
_NUMBER_TYPES = frozenset({int, float})
_OBJECT_VALUE_TYPES = frozenset({int, float, str, bool, type(None)})


def _features(value: object) -> dict[str, Any] | list[Any]:
    # Fast path: the set of value types, computed in C, is checked once per event.
    if isinstance(value, list):
        if not value:
            raise DecodeError("features is empty: nothing to score")
        if len(value) > MAX_FEATURES:
            raise DecodeError(f"more than {MAX_FEATURES} features")
        if not set(map(type, value)) <= _ARRAY_ITEM_TYPES:
            for i, v in enumerate(value):
                if v is not None and not _is_number(v):
                    raise DecodeError(f"features[{i}] must be a number or null, got {_type(v)}")
        return value
    if isinstance(value, dict):
        if not value:
            raise DecodeError("features is empty: nothing to score")
        if len(value) > MAX_FEATURES:
            raise DecodeError(f"more than {MAX_FEATURES} features")
        if not set(map(type, value.values())) <= _OBJECT_VALUE_TYPES:
            for k, v in value.items():
                if not (v is None or isinstance(v, str | bool) or _is_number(v)):
                    raise DecodeError(f"features.{k[:64]} must be a number, string, boolean or null, got {_type(v)}")
        return value
    if value is None:
        raise DecodeError("missing required field features")
    raise DecodeError(f"features must be an object or an array, got {_type(value)}")


def _probabilities(value: object) -> dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, list):
        items = list(enumerate(value))
        probs = {str(i): v for i, v in items}
    elif isinstance(value, dict):
        probs = value
    else:
        raise DecodeError(f"probabilities must be an object or an array, got {_type(value)}")
    if not probs:
        raise DecodeError("probabilities is empty")
    if len(probs) > MAX_CLASSES:
        raise DecodeError(f"more than {MAX_CLASSES} classes in probabilities")
    values = probs.values()
    if set(map(type, values)) <= _NUMBER_TYPES and min(values) >= 0 and max(values) <= 1:
        total = sum(values)
        if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
            raise DecodeError(f"probabilities sum to {total:.4f}, not 1 within {PROBABILITY_SUM_TOLERANCE}")
        return probs
    total = 0.0
    for k, v in probs.items():
        if not _is_number(v):
            raise DecodeError(f"probabilities[{k[:64]}] must be a number, got {_type(v)}")
        if v < 0 or v > 1:
            raise DecodeError(f"probabilities[{k[:64]}] = {v} is outside [0, 1]")
        total += v
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise DecodeError(f"probabilities sum to {total:.4f}, not 1 within {PROBABILITY_SUM_TOLERANCE}")
    return probs


def _scalar(value: object, key: str, allow_null: bool) -> str | int | float | None:
    if value is None:
        if allow_null:
            return None
        raise DecodeError(f"{key} must be a string or a number, got null")
    if isinstance(value, str) or _is_number(value):
        if isinstance(value, float):
            _check_finite(value, key)
        return value  # type: ignore[return-value]
    raise DecodeError(f"{key} must be a string or a number, got {_type(value)}")


def decode_prediction(value: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> PredictionEvent:
    """Decode and validate one prediction-log message (contract v1)."""
    obj = _load_object(value, max_bytes)
    event_id = _string(obj, "event_id", 128, required=True)
    ts, naive = _ts(obj)
    model = _string(obj, "model", 256, required=True)
    model_version = _string(obj, "model_version", 128, required=False)
    client_id = _string(obj, "client_id", 256, required=False)
    if "features" not in obj:
        raise DecodeError("missing required field features")
    features = _features(obj["features"])
    if "prediction" not in obj:
        raise DecodeError("missing required field prediction")
    prediction = _scalar(obj["prediction"], "prediction", allow_null=False)
    probabilities = _probabilities(obj.get("probabilities"))
    label = _scalar(obj.get("label"), "label", allow_null=True)
    latency = obj.get("latency_ms")
    if latency is not None and not _is_number(latency):
        raise DecodeError(f"latency_ms must be a number, got {_type(latency)}")
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise DecodeError(f"meta must be an object, got {_type(meta)}")
    return PredictionEvent(
        event_id=event_id,  # type: ignore[arg-type]
        ts=ts,
        model=model,  # type: ignore[arg-type]
        model_version=model_version,
        client_id=client_id,
        features=features,
        prediction=prediction,  # type: ignore[arg-type]
        probabilities=probabilities,
        label=label,
        latency_ms=float(latency) if latency is not None else None,
        raw=obj,
        naive_ts=naive,
    )


def decode_label(value: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> LabelEvent:
    """Decode and validate one delayed-label message: ``event_id``, ``ts``, ``label``."""
    obj = _load_object(value, max_bytes)
    event_id = _string(obj, "event_id", 128, required=True)
    ts, _naive = _ts(obj)
    if "label" not in obj:
        raise DecodeError("missing required field label")
    label = _scalar(obj["label"], "label", allow_null=True)
    return LabelEvent(
        event_id=event_id,  # type: ignore[arg-type]
        ts=ts,
        label=label,
        model=_string(obj, "model", 256, required=False),
        client_id=_string(obj, "client_id", 256, required=False),
    )


def class_key(value: str | int | float | None) -> str | None:
    """Canonical text of a class label, so that ``7``, ``7.0`` and ``"7"`` compare equal.

    >>> class_key(7), class_key(7.0), class_key("7"), class_key(None)
    ('7', '7', '7', None)
    """
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
