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


# -- labels that overtake their predictions ---------------------------------------------------------


def _pred(i: int, ts: float) -> RawMessage:
    return RawMessage("predictions", "p", 0, i, orjson.dumps(
        {"event_id": f"e{i}", "ts": ts, "model": "m", "client_id": f"c{i % 5}", "features": [float(i % 7), 1.0],
         "prediction": str(i % 2)}))


def _label(j: int, event: int, ts: float) -> RawMessage:
    return RawMessage("labels", "l", 0, j, orjson.dumps({"event_id": f"e{event}", "ts": ts, "label": str(event % 3 % 2)}))


def catch_up_stream(n: int = 600) -> list[RawMessage]:
    """A consumer catching up after a pause: the sparse labels topic runs ~an hour ahead of predictions."""
    preds = [_pred(i, 1000.0 + 10 * i) for i in range(n)]
    labels = [_label(j, i, 1000.0 + 10 * i + 120) for j, i in enumerate(range(0, n, 3))]
    labels.append(_label(len(labels), 10**6, 1000.0 + 10 * n))  # its prediction never comes
    out: list[RawMessage] = []
    for k in range(0, n, 60):  # each poll: 60 predictions, 60 labels (labels cover 3x the time)
        out += labels[k:k + 60] + preds[k:k + 60]
    return out


def test_labels_that_overtake_their_predictions_still_join() -> None:
    eng = Engine(config(early_label_wait_seconds=600.0), "r")
    r = run_in_batches(eng, catch_up_stream(), 97)
    scope = eng.scope(0)
    assert scope.labels_matched == 200  # every label whose prediction came
    assert scope.labels_unmatched == 0  # the orphan waits: the predictions' clock never passed its ts + 600 s
    assert len(scope.early) == 1
    assert not [a for a in r.alerts if a["detector"] == "data_quality.labels"]


def test_a_label_without_prediction_counts_once_the_predictions_clock_passes_it() -> None:
    eng = Engine(config(early_label_wait_seconds=60.0, unmatched_labels_alert_at=1), "r")
    eng.process([_label(0, 999, 1000.0), _pred(0, 1000.0), _pred(1, 1050.0)])
    assert eng.scope(0).labels_unmatched == 0
    # one prediction with a clock 6 h ahead does not move the predictions' clock
    r = eng.process([_pred(2, 1000.0 + 6 * 3600), _pred(3, 1055.0), _pred(4, 1056.0)])
    assert eng.scope(0).labels_unmatched == 0 and not r.alerts
    r = eng.process([_pred(i, 1040.0 + 10 * i) for i in range(5, 15)])
    assert eng.scope(0).labels_unmatched == 1
    (notice,) = [a for a in r.alerts if a["detector"] == "data_quality.labels"]
    assert "e999" in notice["explanation"]


def test_early_labels_are_batch_invariant_and_survive_a_snapshot() -> None:
    msgs = catch_up_stream()
    cfg = config(early_label_wait_seconds=600.0)
    whole = canonical(run_in_batches(Engine(cfg, "r"), msgs, len(msgs)))
    assert whole["alerts"]
    for size in (1, 7, 250):
        assert canonical(run_in_batches(Engine(cfg, "r"), msgs, size)) == whole
    first = Engine(cfg, "r")
    part1 = run_in_batches(first, msgs[:333], 50)
    assert first.scope(0).early  # labels are waiting at the cut
    second = Engine(cfg, "r")
    second.restore(0, statecodec.decode(statecodec.encode(first.snapshot(0))))
    part2 = run_in_batches(second, msgs[333:], 50)
    merged = BatchResult()
    for part in (part1, part2):
        for field in ("alerts", "alert_updates", "flagged", "stats", "dead_letters"):
            getattr(merged, field).extend(getattr(part, field))
    assert canonical(merged) == whole
    assert second.scope(0).labels_matched == 200


def test_restore_keeps_the_routes_class_order() -> None:
    """The learned schema (features and probability classes) survives a snapshot, so class-probability
    columns line up the same way after a restart."""
    msgs = [RawMessage("predictions", "p", 0, i, orjson.dumps(
        {"event_id": f"e{i}", "ts": float(i), "model": "m", "features": [1.0, float(i % 3)], "prediction": "b",
         "probabilities": {"b": 0.6, "a": 0.3, "c": 0.1}})) for i in range(20)]
    eng = Engine(config(), "r")
    eng.process(msgs)
    restored = Engine(config(), "r")
    restored.restore(0, statecodec.decode(statecodec.encode(eng.snapshot(0))))
    (before,) = eng.scope(0).routes.values()
    (after,) = restored.scope(0).routes.values()
    assert after.schema == before.schema and after.schema.classes == ("b", "a", "c")


def test_messages_of_several_partitions_share_one_scope_when_told_to() -> None:
    """A Kafka range replay feeds every partition into scope 0: the results are those of the same
    stream from one partition, except that positions and dead letters keep each message's origin."""
    from dataclasses import replace

    msgs = stream()
    spread = [replace(m, source="topic", partition=i % 3, offset=i, scope=0) for i, m in enumerate(msgs)]
    one, many = Engine(config(), "r"), Engine(config(), "r")
    a, b = run_in_batches(one, msgs, 250), run_in_batches(many, spread, 250)
    assert canonical(a)["alerts"] == canonical(b)["alerts"] and a.events == b.events
    assert set(many.scopes) == {0}
    assert set(many.scopes[0].positions) == {"topic:0", "topic:1", "topic:2"}
    assert {d["partition"] for d in b.dead_letters} == {i % 3 for i, m in enumerate(msgs) if b"NaN" in m.value}


def test_a_stream_level_alert_states_the_models_budget_and_its_detectors_share() -> None:
    from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig
    from pipeline.traffic import encode_message, generate

    live = generate("drift-abrupt", n_events=5000, seed=2)
    msgs = [RawMessage("predictions", "p", 0, i, encode_message(m)) for i, m in enumerate(live.predictions)]
    cfg = MonitorConfig(defaults=ModelConfig(events_between_false_alarms=1e6,
                                             detectors={"drift": DetectorSpec(), "performance": DetectorSpec()}))
    drift = [a for a in Engine(cfg, "r").process(msgs).alerts if a["kind"] == "drift"]
    assert drift
    budget = orjson.loads(drift[0]["explanation"])["false_alarm_budget"]
    assert budget["model"] == 1e6 and budget["this_detector"] == 2e6 and budget["shared_by_detectors"] == 2
