from __future__ import annotations

import math
from datetime import datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.decode import DecodeError, class_key, decode_label, decode_prediction
from pipeline.timefmt import parse_ts

BASE = {"event_id": "e1", "ts": "2026-11-26T06:33:34.120Z", "model": "digits", "features": [0.0, 0.5],
        "prediction": "7"}


def enc(obj: object) -> bytes:
    return orjson.dumps(obj)


def test_contract_example_decodes() -> None:
    raw = (b'{"event_id": "9f1c2a", "ts": "2026-11-26T06:33:34.120Z", "model": "digits", "model_version": "3",'
           b' "client_id": "acct-17", "features": [0.0, 0.31, 0.94, 0.12], "prediction": "7",'
           b' "probabilities": {"7": 0.93, "1": 0.05, "9": 0.02}, "latency_ms": 4.2}')
    ev = decode_prediction(raw)
    assert ev.event_id == "9f1c2a" and ev.model_version == "3" and ev.client_id == "acct-17"
    assert ev.ts == pytest.approx(1795674814.12)
    assert ev.probabilities == {"7": 0.93, "1": 0.05, "9": 0.02}
    assert not ev.naive_ts


def test_naive_timestamp_is_utc_and_reported() -> None:
    ev = decode_prediction(enc({**BASE, "ts": "2026-11-26T06:33:34.120"}))
    assert ev.naive_ts and ev.ts == pytest.approx(1795674814.12)


def test_epoch_seconds_and_object_features() -> None:
    ev = decode_prediction(enc({**BASE, "ts": 1795674814.5, "features": {"a": 1, "b": "x", "c": None, "d": True}}))
    assert ev.ts == 1795674814.5 and ev.features == {"a": 1, "b": "x", "c": None, "d": True}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id":"a","ts":0,"model":"m","features":[NaN],"prediction":1}', "not valid JSON: NaN at char 47"),
        (b'{"event_id":"a","ts":0,"model":"m","features":[Infinity],"prediction":1}', "not valid JSON: Infinity"),
        (b'{"event_id":"a","ts":0,"model":"m","features":[-Infinity],"prediction":1}', "not valid JSON: -Infinity"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "empty message"),
        (enc({k: v for k, v in BASE.items() if k != "model"}), "missing required field model"),
        (enc({k: v for k, v in BASE.items() if k != "ts"}), "missing required field ts"),
        (enc({k: v for k, v in BASE.items() if k != "features"}), "missing required field features"),
        (enc({k: v for k, v in BASE.items() if k != "prediction"}), "missing required field prediction"),
        (enc({**BASE, "event_id": ""}), "event_id must not be empty"),
        (enc({**BASE, "event_id": "x" * 129}), "longer than 128"),
        (enc({**BASE, "event_id": 5}), "event_id must be a string"),
        (enc({**BASE, "ts": "yesterday"}), "not an RFC 3339"),
        (enc({**BASE, "ts": True}), "not a boolean"),
        (enc({**BASE, "ts": -5}), "out of range"),
        (enc({**BASE, "features": [1, "a"]}), "features[1] must be a number"),
        (enc({**BASE, "features": [True]}), "features[0] must be a number"),
        (enc({**BASE, "features": {"a": [1]}}), "features.a must be"),
        (enc({**BASE, "features": "1,2"}), "features must be an object or an array"),
        (enc({**BASE, "features": []}), "features is empty"),
        (enc({**BASE, "prediction": None}), "prediction must be a string or a number"),
        (enc({**BASE, "prediction": [1]}), "prediction must be a string or a number"),
        (enc({**BASE, "probabilities": {"a": 0.5, "b": 0.2}}), "sum to 0.7000"),
        (enc({**BASE, "probabilities": {"a": 1.5, "b": -0.5}}), "outside [0, 1]"),
        (enc({**BASE, "probabilities": {"a": "0.5"}}), "must be a number"),
        (enc({**BASE, "model_version": 3}), "model_version must be a string"),
        (enc({**BASE, "client_id": None}), "client_id must be a string, got null"),
        (enc({**BASE, "latency_ms": "4"}), "latency_ms must be a number"),
        (enc({**BASE, "meta": [1]}), "meta must be an object"),
        (b'{"event_id":"a","ts":0,"model":"m","features":[1],"prediction":1} trailing', "not valid JSON"),
    ],
)
def test_malformed_messages_have_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=None) as info:
        decode_prediction(raw)
    assert reason in str(info.value)


def test_size_limit() -> None:
    raw = enc({**BASE, "meta": {"pad": "x" * 2000}})
    with pytest.raises(DecodeError, match="exceeds the 1000-byte limit"):
        decode_prediction(raw, max_bytes=1000)
    assert decode_prediction(raw, max_bytes=10_000).event_id == "e1"


def test_probabilities_within_tolerance_and_arrays() -> None:
    ev = decode_prediction(enc({**BASE, "probabilities": [0.33, 0.33, 0.33]}))
    assert ev.probabilities == {"0": 0.33, "1": 0.33, "2": 0.33}


def test_label_messages() -> None:
    lab = decode_label(b'{"event_id":"e1","ts":"2026-11-26T06:40:00Z","label":7,"model":"digits"}')
    assert (lab.event_id, lab.label, lab.model) == ("e1", 7, "digits")
    with pytest.raises(DecodeError, match="missing required field label"):
        decode_label(b'{"event_id":"e1","ts":0}')


def test_class_key_normalises_numbers() -> None:
    assert class_key(7) == class_key(7.0) == class_key("7") == "7"
    assert class_key(0.5) == "0.5"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_bytes_never_crash(raw: bytes) -> None:
    try:
        decode_prediction(raw)
        decode_label(raw)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(BASE) + ["probabilities", "label", "meta", "client_id"]), json_values))
def test_hostile_objects_are_accepted_only_if_valid(obj: dict[str, object]) -> None:
    candidate = {**BASE, **obj}
    try:
        raw = orjson.dumps(candidate)
    except (orjson.JSONEncodeError, TypeError):
        return
    try:
        ev = decode_prediction(raw)
    except DecodeError:
        return
    # whatever was accepted satisfies the contract
    assert isinstance(ev.event_id, str) and 1 <= len(ev.event_id) <= 128
    assert math.isfinite(ev.ts) and ev.ts >= 0
    assert isinstance(ev.model, str) and ev.model
    assert isinstance(ev.prediction, str | int | float) and not isinstance(ev.prediction, bool)
    if ev.probabilities is not None:
        assert abs(sum(ev.probabilities.values()) - 1) <= 0.02 + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.none(), min_size=1, max_size=20))
def test_valid_numeric_vectors_round_trip(values: list[float | None]) -> None:
    ev = decode_prediction(enc({**BASE, "features": values}))
    assert ev.features == values


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 30)),
       st.sampled_from(["", ".1", ".12", ".123", ".123456", ".123456789"]))
def test_fast_timestamp_path_agrees_with_the_general_parser(moment: datetime, fraction: str) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction
    fast, _ = parse_ts(text + "Z")
    general, _ = parse_ts(text + "+00:00")  # same instant, through datetime.fromisoformat
    assert fast == general
