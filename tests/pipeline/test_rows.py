"""Rows written for alerts: explanation numbers are rounded for readability, times are not."""

from __future__ import annotations

import orjson

from pipeline.rows import clean_json, dumps


def test_timestamps_in_explanations_keep_their_seconds_and_milliseconds() -> None:
    ex = {"first_suspicious_ts": 1795034566.25, "reference_period": {"end": 1795007656.0}, "z": 5.123456789,
          "counts": [123456, 0.000123456789]}
    out = orjson.loads(dumps(ex))
    assert out["first_suspicious_ts"] == 1795034566.25  # was 1795030000.0 with 6 significant digits
    assert out["reference_period"]["end"] == 1795007656.0
    assert out["z"] == 5.12346 and out["counts"] == [123456, 0.000123457]


def test_non_finite_numbers_become_null() -> None:
    assert clean_json({"a": float("nan"), "b": [float("inf")]}) == {"a": None, "b": [None]}
