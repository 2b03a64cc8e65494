"""Every registered detector through the same generic checks (the protocol of detectors/base.py).

For each detector, on production-like traffic from ``pipeline.traffic`` (drift, an attacker, labels):
- its state is storable by ``pipeline.statecodec`` (JSON-like values and arrays only, no pickle);
- it is deterministic: two instances give identical outputs;
- it is batch-invariant: batches of 7 and of 1,500 give the same findings, flagged events and stats;
- a snapshot taken mid-stream and loaded into a fresh instance continues identically;
- a snapshot from other parameters is refused loudly;
- findings are well-formed (trigger in the stream, ``raised_at`` = the trigger's ts, a ``summary``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from detectors import builtin
from detectors.base import REGISTRY, Detector, DetectorContext, DetectorOutput, StateMismatchError
from pipeline import statecodec
from pipeline.decode import class_key, decode_prediction
from pipeline.events import EventBatch, OutcomeBatch, RouteKey
from pipeline.routing import build_batch, learn_schema
from pipeline.traffic import encode_message, generate

builtin.load()
NAMES = sorted(n for n in REGISTRY if not n.startswith("test_"))
ROUTE = RouteKey("tabular", "1", 0)


@pytest.fixture(scope="module")
def stream() -> tuple[EventBatch, OutcomeBatch]:
    traffic = generate("mixed", n_events=12000, seed=21, label_fraction=0.6)
    events = [decode_prediction(encode_message(m)) for m in traffic.predictions]
    schema = learn_schema(events[0])
    batch = build_batch(ROUTE, schema, events)
    predicted = {e.event_id: class_key(e.prediction) for e in events}
    labelled = [(e.event_id, e.ts, 0.0 if class_key(e.label) == predicted[e.event_id] else 1.0)
                for e in events if e.label is not None]
    for lab in traffic.labels:  # delayed labels, joined by event id, in arrival order
        labelled.append((lab["event_id"], float(lab["ts"]),
                         0.0 if class_key(lab["label"]) == predicted[lab["event_id"]] else 1.0))
    labelled.sort(key=lambda x: x[1])
    outcomes = OutcomeBatch(ROUTE, [x[0] for x in labelled], np.array([x[1] for x in labelled]),
                            np.array([x[1] for x in labelled]), np.array([x[2] for x in labelled]))
    return batch, outcomes


def make(name: str, batch: EventBatch, **params: Any) -> Detector:
    return REGISTRY[name](DetectorContext(route=ROUTE, schema=batch.schema, seed=3), **params)


def _slices(b: EventBatch, size: int) -> Iterator[EventBatch]:
    for s in range(0, len(b), size):
        e = min(s + size, len(b))
        yield EventBatch(b.route, b.schema, b.event_ids[s:e], b.ts[s:e], b.client_ids[s:e], b.X[s:e], b.C[s:e],
                         b.prediction[s:e], b.prediction_value[s:e], b.confidence[s:e], b.margin[s:e],
                         b.entropy[s:e], b.label[s:e], b.payloads[s:e])


def _outcome_slices(o: OutcomeBatch, size: int) -> Iterator[OutcomeBatch]:
    for s in range(0, len(o), size):
        e = min(s + size, len(o))
        yield OutcomeBatch(o.route, o.event_ids[s:e], o.ts[s:e], o.predicted_ts[s:e], o.error[s:e])


def feed(det: Detector, data: tuple[EventBatch, OutcomeBatch], size: int, start: int = 0,
         stop: int | None = None) -> list[DetectorOutput]:
    batch, outcomes = data
    if det.consumes == "outcomes":
        src = list(_outcome_slices(outcomes, 1))[start:stop]
        chunks = [OutcomeBatch(ROUTE, [x.event_ids[0] for x in src[i:i + size]],
                               np.concatenate([x.ts for x in src[i:i + size]]),
                               np.concatenate([x.predicted_ts for x in src[i:i + size]]),
                               np.concatenate([x.error for x in src[i:i + size]]))
                  for i in range(0, len(src), size)]
        return [det.process_outcomes(c) for c in chunks]
    part = next(_slices(batch, len(batch)))
    if start or stop is not None:
        part = list(_slices(batch, 1))
        part = _concat(part[start:stop])
    return [det.process(c) for c in _slices(part, size)]


def _concat(items: list[EventBatch]) -> EventBatch:
    f = items[0]
    return EventBatch(f.route, f.schema, [x.event_ids[0] for x in items], np.concatenate([x.ts for x in items]),
                      [x.client_ids[0] for x in items], np.vstack([x.X for x in items]),
                      np.vstack([x.C for x in items]), [x.prediction[0] for x in items],
                      np.concatenate([x.prediction_value for x in items]),
                      np.concatenate([x.confidence for x in items]), np.concatenate([x.margin for x in items]),
                      np.concatenate([x.entropy for x in items]), [x.label[0] for x in items],
                      [x.payloads[0] for x in items])


def canonical(outputs: list[DetectorOutput]) -> tuple[list[Any], list[Any], list[Any]]:
    def norm(x: Any) -> Any:
        return statecodec.decode(statecodec.encode(x))

    findings = [(f.kind, f.trigger_event_id, f.raised_at, round(f.score, 9), f.is_update, f.client_id, f.event_ids,
                 f.window_start, f.window_end) for o in outputs for f in o.findings]
    flagged = [(f.event_id, round(f.score, 9)) for o in outputs for f in o.flagged]
    stats = [(s.stat, s.window, s.n, None if s.score is None else round(s.score, 9)) for o in outputs for s in o.stats]
    return norm(findings), norm(flagged), norm(stats)


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariant_and_deterministic(name: str, stream: tuple[EventBatch, OutcomeBatch]) -> None:
    whole = canonical(feed(make(name, stream[0]), stream, 1500))
    assert any(whole), f"{name} produced nothing on the stream: the check would be empty"
    assert canonical(feed(make(name, stream[0]), stream, 1500)) == whole  # deterministic
    assert canonical(feed(make(name, stream[0]), stream, 7)) == whole  # batch cuts do not matter


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_mid_stream_continues_identically(name: str, stream: tuple[EventBatch, OutcomeBatch]) -> None:
    n = len(stream[1]) if REGISTRY[name].consumes == "outcomes" else len(stream[0])
    cut = int(n * 0.6)
    straight = make(name, stream[0])
    feed(straight, stream, 500, 0, cut)
    rest_straight = canonical(feed(straight, stream, 500, cut))
    first = make(name, stream[0])
    feed(first, stream, 500, 0, cut)
    blob = statecodec.encode(first.state_dict())  # storable: JSON-like values and arrays only
    second = make(name, stream[0])
    second.load_state_dict(statecodec.decode(blob))
    assert canonical(feed(second, stream, 500, cut)) == rest_straight


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_of_other_parameters_is_refused(name: str, stream: tuple[EventBatch, OutcomeBatch]) -> None:
    snap = make(name, stream[0]).state_dict()
    other = REGISTRY[name](DetectorContext(route=ROUTE, schema=stream[0].schema, seed=4))
    with pytest.raises(StateMismatchError):
        other.load_state_dict(snap)


@pytest.mark.parametrize("name", NAMES)
def test_findings_are_well_formed(name: str, stream: tuple[EventBatch, OutcomeBatch]) -> None:
    batch, outcomes = stream
    ts = dict(zip(batch.event_ids, batch.ts.tolist(), strict=True))
    ts.update(zip(outcomes.event_ids, outcomes.ts.tolist(), strict=True))
    det = make(name, batch)
    for out in feed(det, stream, 1000):
        for f in out.findings:
            assert f.trigger_event_id in ts and f.raised_at == pytest.approx(ts[f.trigger_event_id])
            assert f.detector == name and f.config_hash == det.config_hash
            assert isinstance(f.explanation.get("summary"), str) and f.explanation["summary"]
            assert np.isfinite(f.score)
            statecodec.encode(dict(f.explanation))
