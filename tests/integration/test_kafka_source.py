"""KafkaSource and the producer helper against the real local broker."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Literal, NamedTuple

import pytest

from pipeline.events import RawMessage
from pipeline.sources.kafka import (
    CommitFailed,
    KafkaSource,
    RebalanceEvents,
    _RecordingListener,
    ensure_topics,
    produce_jsonl,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def _topics(bootstrap: str, name: str) -> tuple[str, str]:
    preds, labels = f"predictions-{name}", f"labels-{name}"
    ensure_topics(bootstrap, {preds: PARTITIONS, labels: PARTITIONS})
    return preds, labels


def _produce(bootstrap: str, topic: str, n: int, start: int = 0,
             compression: Literal["gzip"] | None = None) -> set[bytes]:
    values = [json.dumps({"event_id": f"{topic}-{i}", "client_id": f"c{i % 13}"}).encode()
              for i in range(start, start + n)]
    sent = produce_jsonl(bootstrap, topic, ((f"c{i % 13}".encode(), v) for i, v in enumerate(values)),
                         compression=compression)
    assert sent == n
    return set(values)


def _source(bootstrap: str, preds: str, labels: str, group: str) -> KafkaSource:
    return KafkaSource(bootstrap=bootstrap, group_id=group, predictions_topic=preds, labels_topic=labels,
                       session_timeout_ms=10_000, heartbeat_interval_ms=1_000)


def _drain(source: KafkaSource, want: int, deadline_s: float = 60.0,
           on_events: Callable[[RebalanceEvents], None] | None = None) -> list[RawMessage]:
    got: list[RawMessage] = []
    end = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < end:
        got += source.poll(max_records=500, timeout_ms=300)
        ev = source.take_rebalance_events()
        if ev and on_events is not None:
            on_events(ev)
    return got


def _wait_assigned(source: KafkaSource, deadline_s: float = 30.0) -> RebalanceEvents:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        # until the assignment has been taken, a poll can never hand out records
        assert source.poll(max_records=1, timeout_ms=200) == []
        ev = source.take_rebalance_events()
        if ev.assigned:
            return ev
    raise AssertionError("no assignment within the deadline")


def test_consumes_everything_exactly_once(kafka_broker: str, unique_name: str) -> None:
    preds, labels = _topics(kafka_broker, unique_name)
    sent_p = _produce(kafka_broker, preds, 3000)
    sent_l = _produce(kafka_broker, labels, 500, compression="gzip")
    with _source(kafka_broker, preds, labels, f"g-{unique_name}") as src:
        got = _drain(src, 3500)
        time.sleep(1.0)
        got += src.poll(max_records=500, timeout_ms=1000)  # nothing more may arrive
        assert src.take_rebalance_events() == RebalanceEvents()
    coords = [(m.source, m.partition, m.offset) for m in got]
    assert len(coords) == len(set(coords)) == 3500
    assert {m.value for m in got if m.stream == "predictions"} == sent_p
    assert {m.value for m in got if m.stream == "labels"} == sent_l
    assert all(m.source == (preds if m.stream == "predictions" else labels) for m in got)
    assert {m.partition for m in got} == set(range(PARTITIONS))
    per_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
    for m in got:
        per_partition[(m.source, m.partition)].append(m.offset)
        assert m.key is not None and json.loads(m.value)["client_id"].encode() == m.key
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))  # in order, from the start, no gaps


def test_assignment_is_reported_and_first_poll_withholds(kafka_broker: str, unique_name: str) -> None:
    preds, labels = _topics(kafka_broker, unique_name)
    _produce(kafka_broker, preds, 200)
    with _source(kafka_broker, preds, labels, f"g-{unique_name}") as src:
        batches: list[list[RawMessage]] = []
        events = RebalanceEvents()
        end = time.monotonic() + 30
        while not events.assigned and time.monotonic() < end:
            batches.append(src.poll(max_records=500, timeout_ms=500))
            events = src.take_rebalance_events()
        # the poll in which the group assigned partitions hands out nothing ...
        assert batches[-1] == []
        assert events.assigned == {(t, p) for t in (preds, labels) for p in range(PARTITIONS)}
        assert events.revoked == frozenset()
        # ... and nothing fetched during it is lost: everything comes from offset 0
        got = _drain(src, 200)
        assert len(got) == 200 and len({(m.partition, m.offset) for m in got}) == 200
        assert min(m.offset for m in got) == 0


def test_poll_requires_taking_events(kafka_broker: str, unique_name: str) -> None:
    preds, labels = _topics(kafka_broker, unique_name)
    with _source(kafka_broker, preds, labels, f"g-{unique_name}") as src:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            src.poll(max_records=10, timeout_ms=300)
            if src.assignment():
                break
        with pytest.raises(RuntimeError, match="take_rebalance_events"):
            src.poll(max_records=10, timeout_ms=10)
        assert src.take_rebalance_events().assigned


class TopicPartition(NamedTuple):
    """Stands in for kafka-python's type (only ``pipeline.sources.kafka`` imports ``kafka``)."""

    topic: str
    partition: int


def test_listener_only_records() -> None:
    """The callbacks enqueue and return at once; handling is left to the owning loop."""
    sink: queue.SimpleQueue[tuple[str, frozenset[tuple[str, int]]]] = queue.SimpleQueue()
    flag = threading.Event()
    listener = _RecordingListener(sink, flag)
    t0 = time.perf_counter()
    listener.on_partitions_revoked([TopicPartition("p", 0), TopicPartition("l", 0)])
    listener.on_partitions_assigned([TopicPartition("p", 1)])
    listener.on_partitions_lost([TopicPartition("p", 1)])
    assert time.perf_counter() - t0 < 0.05
    assert flag.is_set()
    assert [sink.get_nowait() for _ in range(3)] == [
        ("revoked", frozenset({("p", 0), ("l", 0)})),
        ("assigned", frozenset({("p", 1)})),
        ("lost", frozenset({("p", 1)})),
    ]
    assert sink.empty()


class _Member(threading.Thread):
    """A group member polling in its own thread, committing after every batch."""

    def __init__(self, source: KafkaSource) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.messages: list[RawMessage] = []
        self.events: list[RebalanceEvents] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.commit_failures = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = self.source.poll(max_records=200, timeout_ms=200)
                ev = self.source.take_rebalance_events()
                if ev:
                    self.events.append(ev)
                self.messages += batch
                if batch:
                    nxt: dict[tuple[str, int], int] = {}
                    for m in batch:
                        nxt[(m.source, m.partition)] = m.offset + 1
                    try:
                        self.source.commit(nxt)
                    except CommitFailed:  # the group rebalanced meanwhile: redelivery is allowed
                        self.commit_failures += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            self.source.close()


def test_two_members_split_partitions_by_range(kafka_broker: str, unique_name: str) -> None:
    preds, labels = _topics(kafka_broker, unique_name)
    sent = _produce(kafka_broker, preds, 1000) | _produce(kafka_broker, labels, 400)
    group = f"g-{unique_name}"
    a = _Member(_source(kafka_broker, preds, labels, group))
    a.start()
    end = time.monotonic() + 30
    while len(a.source.assignment()) < 2 * PARTITIONS and time.monotonic() < end:
        time.sleep(0.1)
    b = _Member(_source(kafka_broker, preds, labels, group))
    b.start()
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pa, pb = a.source.assignment(), b.source.assignment()
            if pa and pb and len(pa | pb) == 2 * PARTITIONS and not (pa & pb):
                break
            time.sleep(0.1)
        pa, pb = a.source.assignment(), b.source.assignment()
        owned: frozenset[tuple[str, int]] = frozenset()
        assert pa and pb and not (pa & pb) and len(pa | pb) == 2 * PARTITIONS
        for owned in (pa, pb):
            # range assignor: each member has the same partition numbers of both topics
            assert {p for t, p in owned if t == preds} == {p for t, p in owned if t == labels}
            assert len(owned) == PARTITIONS
        # a's rebalances were queued and surfaced as net changes that replay to its assignment,
        # including giving up b's partitions (a poll may return mid-rebalance, after the
        # revocation and before the assignment: then the assignment comes with a later poll)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            owned = frozenset()
            for ev in list(a.events):
                assert ev.revoked <= owned, (ev, owned)
                owned = (owned - ev.revoked) | ev.assigned
            if owned == pa:
                break
            time.sleep(0.1)
        assert owned == pa and any(ev.revoked & pb for ev in a.events), (a.events, pa, pb)
        end = time.monotonic() + 60
        while len({m.value for m in a.messages + b.messages}) < len(sent) and time.monotonic() < end:
            time.sleep(0.2)
    finally:
        a.stop.set()
        b.stop.set()
        a.join(30)
        b.join(30)
    assert a.error is None and b.error is None
    everything = [m.value for m in a.messages + b.messages]
    assert set(everything) == sent
    if a.commit_failures == b.commit_failures == 0:
        assert len(everything) == len(sent)  # committed before each rebalance: nothing redelivered
    assert {(m.source, m.partition) for m in b.messages} <= pb


def test_commit_then_new_member_resumes(kafka_broker: str, unique_name: str) -> None:
    preds, labels = _topics(kafka_broker, unique_name)
    _produce(kafka_broker, preds, 400)
    group = f"g-{unique_name}"
    with _source(kafka_broker, preds, labels, group) as first:
        _wait_assigned(first)
        got = _drain(first, 400)
        assert len(got) == 400
        # process only the first half of each partition, commit that
        done: dict[tuple[str, int], int] = {}
        for tp in {(m.source, m.partition) for m in got}:
            offsets = sorted(m.offset for m in got if (m.source, m.partition) == tp)
            done[tp] = offsets[len(offsets) // 2]
        assert first.commit(done) == done
        assert first.commit({(preds, 99): 5}) == {}  # never commits partitions it does not own
        for (t, p), off in done.items():
            assert first.committed(t, p) == off
    with _source(kafka_broker, preds, labels, group) as second:
        rest = _drain(second, 400 - sum(done.values()))
        firsts: dict[tuple[str, int], int] = {}
        for m in rest:
            firsts.setdefault((m.source, m.partition), m.offset)
        assert firsts == done
        assert len(rest) == 400 - sum(done.values())


def test_seek_and_lag(kafka_broker: str, unique_name: str) -> None:
    preds, labels = _topics(kafka_broker, unique_name)
    _produce(kafka_broker, preds, 300)
    _produce(kafka_broker, labels, 40)
    with _source(kafka_broker, preds, labels, f"g-{unique_name}") as src:
        _wait_assigned(src)
        lag = src.lag()
        assert set(lag) == {(t, p) for t in (preds, labels) for p in range(PARTITIONS)}
        assert sum(v for (t, _), v in lag.items() if t == preds) == 300
        assert sum(v for (t, _), v in lag.items() if t == labels) == 40
        got = _drain(src, 340)
        assert len(got) == 340 and sum(src.lag().values()) == 0
        p0 = [m for m in got if m.source == preds and m.partition == 0]
        assert len(p0) > 5
        src.seek(preds, 0, 5)
        src.seek_to({(labels, 1): 0})
        again = _drain(src, len(p0) - 5 + sum(1 for m in got if m.source == labels and m.partition == 1))
        assert sorted(m.offset for m in again if m.source == preds) == list(range(5, len(p0)))
        assert {(m.source, m.partition) for m in again} <= {(preds, 0), (labels, 1)}
        assert src.lag()[(preds, 0)] == 0


def test_pause_and_resume(kafka_broker: str, unique_name: str) -> None:
    preds, labels = _topics(kafka_broker, unique_name)
    with _source(kafka_broker, preds, labels, f"g-{unique_name}") as src:
        _wait_assigned(src)
        src.pause()
        assert src.paused() == src.assignment()
        _produce(kafka_broker, preds, 50)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            assert src.poll(max_records=100, timeout_ms=200) == []
            assert not src.take_rebalance_events()
        assert sum(src.lag().values()) == 50
        src.resume()
        assert src.paused() == frozenset()
        assert len(_drain(src, 50)) == 50
