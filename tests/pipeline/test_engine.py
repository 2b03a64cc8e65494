from __future__ import annotations

from typing import Any

import orjson
import pytest
from fakes import config, stream

from pipeline import statecodec
from pipeline.engine import BatchResult, Engine
from pipeline.events import RawMessage


def run_in_batches(engine: Engine, msgs: list[RawMessage], size: int) -> BatchResult:
    total = BatchResult()
    for start in range(0, len(msgs), size):
        r = engine.process(msgs[start : start + size])
        for field in ("alerts", "alert_updates", "flagged", "stats", "dead_letters"):
            getattr(total, field).extend(getattr(r, field))
        total.events += r.events
        total.duplicates += r.duplicates
    return total


def canonical(result: BatchResult) -> dict[str, list[str]]:
    def key(rows: list[dict[str, Any]]) -> list[str]:
        return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS, default=repr).decode() for r in rows)

    return {f: key(getattr(result, f)) for f in ("alerts", "alert_updates", "flagged", "stats", "dead_letters")}


def test_results_do_not_depend_on_batch_cuts() -> None:
    msgs = stream()
    reference = canonical(run_in_batches(Engine(config(), "r"), msgs, len(msgs)))
    assert reference["alerts"] and reference["flagged"] and reference["stats"] and reference["dead_letters"]
    for size in (1, 7, 500):
        assert canonical(run_in_batches(Engine(config(), "r"), msgs, size)) == reference


def test_redeliveries_are_not_scored_twice() -> None:
    msgs = stream()
    r = run_in_batches(Engine(config(), "r"), msgs, 256)
    assert r.duplicates == sum(1 for i in range(3000) if i % 97 == 5)
    assert r.events == 3001  # 3000 + the odd-schema event
    flagged_ids = [f["event_id"] for f in r.flagged]
    assert len(flagged_ids) == len(set(flagged_ids))


def test_dead_letters_keep_bytes_reason_and_position() -> None:
    r = run_in_batches(Engine(config(), "r"), stream(), 1000)
    assert len(r.dead_letters) == sum(1 for i in range(3000) if i % 333 == 7)
    dl = r.dead_letters[0]
    assert dl["raw"] == b'{"event_id": "broken", "ts": NaN}'
    assert "not valid JSON" in dl["reason"] and dl["source"] == "t-predictions" and dl["position"] > 0


def test_data_quality_notices() -> None:
    r = run_in_batches(Engine(config(), "r"), stream(), 1000)
    dq = [a for a in r.alerts if a["kind"] == "data_quality"]
    detectors = {a["detector"] for a in dq}
    assert "data_quality.schema" in detectors  # the 3-feature event
    assert "data_quality.labels" in detectors  # unmatched labels reached 3
    schema = next(a for a in dq if a["detector"] == "data_quality.schema")
    assert schema["trigger_event_id"] == "odd" and "array[3]" in schema["explanation"]


def test_delayed_labels_join_and_feed_outcome_detectors() -> None:
    r = run_in_batches(Engine(config(), "r"), stream(), 300)
    perf = [a for a in r.alerts if a["kind"] == "performance"]
    assert {a["model"] for a in perf} == {"m", "m2"}


def test_label_ttl_is_event_time() -> None:
    cfg = config(label_ttl_seconds=5.0)
    eng = Engine(cfg, "r")
    msgs = [RawMessage("predictions", "p", 0, 0, orjson.dumps(
        {"event_id": "a", "ts": 0.0, "model": "m", "features": [1.0, 1.0], "prediction": "1"})),
        RawMessage("predictions", "p", 0, 1, orjson.dumps(
            {"event_id": "b", "ts": 100.0, "model": "m", "features": [1.0, 1.0], "prediction": "1"})),
        RawMessage("labels", "l", 0, 0, orjson.dumps({"event_id": "a", "ts": 101.0, "label": "1"})),
        RawMessage("labels", "l", 0, 1, orjson.dumps({"event_id": "b", "ts": 102.0, "label": "1"}))]
    eng.process(msgs)
    scope = eng.scope(0)
    assert scope.labels_unmatched == 1 and scope.labels_matched == 1


@pytest.mark.parametrize("cut", [1, 1234, 2999])
def test_snapshot_restore_gives_identical_results(cut: int) -> None:
    msgs = stream()
    whole = canonical(run_in_batches(Engine(config(), "r"), msgs, 250))
    first = Engine(config(), "r")
    part1 = run_in_batches(first, msgs[:cut], 250)
    blob = statecodec.encode(first.snapshot(0))
    second = Engine(config(), "r")
    second.restore(0, statecodec.decode(blob))
    part2 = run_in_batches(second, msgs[cut:], 250)
    merged = BatchResult()
    for part in (part1, part2):
        for field in ("alerts", "alert_updates", "flagged", "stats", "dead_letters"):
            getattr(merged, field).extend(getattr(part, field))
    assert canonical(merged) == whole


def test_restore_refuses_other_config() -> None:
    eng = Engine(config(), "r")
    eng.process(stream(50))
    snap = eng.snapshot(0)
    other = Engine(config(batch_size=7), "r")
    with pytest.raises(ValueError, match="made with config"):
        other.restore(0, snap)


def test_partitions_keep_separate_state() -> None:
    msgs = stream(400)
    moved = [RawMessage(m.stream, m.source, 1, m.offset, m.value) for m in msgs]
    eng = Engine(config(), "r")
    a = eng.process(msgs)
    b = eng.process(moved)
    assert a.events == b.events  # partition 1 did not see partition 0's ids as redeliveries
    assert {r["partition"] for r in b.flagged} == {1}


def test_a_detector_that_cannot_resume_starts_fresh_with_a_notice() -> None:
    eng = Engine(config(), "r")
    eng.process(stream(300))
    snap = eng.snapshot(0)
    snap["routes"][0]["detectors"][0]["state_version"] = 999  # as if written by another release
    other = Engine(config(), "r")
    other.restore(0, snap)
    (first_route,) = [r for r in other.scope(0).route_order if r.model == snap["routes"][0]["model"]]
    assert other.scope(0).routes[first_route].detectors[0].seen == 0  # fresh
    out = other.process(stream(10, seed=5))
    notices = [a for a in out.alerts if a["detector"] == "data_quality.restore"]
    assert len(notices) == 1 and "state_version" in notices[0]["explanation"]


def test_events_whose_features_change_shape_are_scored_as_missing() -> None:
    import numpy as np

    from pipeline.decode import decode_prediction
    from pipeline.events import RouteKey
    from pipeline.routing import build_batch, learn_schema

    def ev(i: int, features: object) -> object:
        return decode_prediction(orjson.dumps({"event_id": str(i), "ts": i, "model": "m", "features": features,
                                               "prediction": "a", "probabilities": {"a": 0.6, "b": 0.4}}))

    arr = [ev(0, [1.0, 2.0]), ev(1, {"x": 1.0, "y": 2.0}), ev(2, [3.0]), ev(3, [None, 4.0])]
    b = build_batch(RouteKey("m", None), learn_schema(arr[0]), arr)  # type: ignore[arg-type]
    assert np.array_equal(b.X, [[1, 2], [np.nan, np.nan], [3, np.nan], [np.nan, 4]], equal_nan=True)
    obj = [ev(0, {"x": 1.0, "c": "fr"}), ev(1, {"x": "oops", "c": "de"}), ev(2, [5.0]), ev(3, {"c": None})]
    b = build_batch(RouteKey("m", None), learn_schema(obj[0]), obj)  # type: ignore[arg-type]
    assert np.array_equal(b.X[:, 0], [1.0, np.nan, np.nan, np.nan], equal_nan=True)
    assert b.C[:, 0].tolist() == ["fr", "de", None, None]
    assert np.allclose(b.margin, 0.2)
