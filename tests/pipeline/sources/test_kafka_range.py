"""Offset-range resolution and the replay order of a Kafka range, with a test double for the broker."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.events import RawMessage
from pipeline.kafka_replay import KafkaRange, _merged
from pipeline.sources.files import read_replay
from pipeline.sources.kafka_range import PartitionRange, RangeError, resolve_ranges
from pipeline.timefmt import TimestampError, parse_time_ms


class Broker:
    """Partitions as lists of message timestamps (ms); offsets are list indexes."""

    def __init__(self, topics: dict[str, list[list[int]]]) -> None:
        self.topics = topics
        self.calls: list[str] = []

    def partitions(self, topic: str) -> list[int] | None:
        return list(range(len(self.topics[topic]))) if topic in self.topics else None

    def offsets_for_time(self, topic: str, partitions: list[int], ms: int) -> dict[int, int | None]:
        self.calls.append(f"time {ms}")
        out: dict[int, int | None] = {}
        for p in partitions:
            ts = self.topics[topic][p]
            out[p] = next((o for o, t in enumerate(ts) if t >= ms), None)
        return out

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        self.calls.append("end")
        return {p: len(self.topics[topic][p]) for p in partitions}


def test_each_partition_gets_the_offsets_of_its_messages_in_the_half_open_range() -> None:
    broker = Broker({"t": [[10, 20, 30, 40], [5, 25, 26, 90], [1, 2]]})
    got = resolve_ranges(broker, ["t"], 20, 40)
    assert got == [PartitionRange("t", 0, 1, 3), PartitionRange("t", 1, 1, 3), PartitionRange("t", 2, 2, 2)]
    assert [r.size for r in got] == [2, 2, 0]
    assert broker.calls[0] == "end"  # end offsets first: the range never grows past the replay's start


def test_no_message_at_or_after_to_means_the_partition_end() -> None:
    got = resolve_ranges(Broker({"t": [[10, 20, 30]]}), ["t"], 15, 1000)
    assert got == [PartitionRange("t", 0, 1, 3)]


def test_a_range_after_every_message_or_before_any_is_empty() -> None:
    broker = Broker({"t": [[10, 20]], "l": [[]]})
    assert [r.size for r in resolve_ranges(broker, ["t", "l"], 500, 900)] == [0, 0]
    assert [r.size for r in resolve_ranges(broker, ["t", "l"], 1, 5)] == [0, 0]
    assert resolve_ranges(broker, ["t"], 20, 20) == [PartitionRange("t", 0, 1, 1)]


def test_topics_keep_their_order_and_partitions_are_sorted() -> None:
    got = resolve_ranges(Broker({"p": [[1], [1]], "l": [[1]]}), ["p", "l"], 0, 5)
    assert [(r.topic, r.partition) for r in got] == [("p", 0), ("p", 1), ("l", 0)]


def test_errors() -> None:
    with pytest.raises(RangeError, match="unknown topic 'nope'"):
        resolve_ranges(Broker({"t": [[1]]}), ["t", "nope"], 0, 5)
    with pytest.raises(ValueError, match="--from is after --to"):
        resolve_ranges(Broker({"t": [[1]]}), ["t"], 6, 5)


def test_time_arguments() -> None:
    assert parse_time_ms("2026-11-18T12:00:00Z") == 1795003200000
    assert parse_time_ms("2026-11-18T13:00:00.250+01:00") == 1795003200250
    assert parse_time_ms("2026-11-18T12:00:00") == 1795003200000  # no offset: UTC
    assert parse_time_ms(" 1795003200000 ") == 1795003200000
    for bad in ("yesterday", "-5", "1.5", ""):
        with pytest.raises(TimestampError):
            parse_time_ms(bad)


class Reader:
    """Hands out the messages of each partition range, as the real reader does."""

    def __init__(self, data: dict[tuple[str, int], list[bytes]]) -> None:
        self.data = data

    def read(self, ranges: Iterable[PartitionRange], streams: dict[str, str]) -> dict[PartitionRange, Iterator[RawMessage]]:
        return {r: iter([RawMessage(streams[r.topic], r.topic, r.partition, o, self.data[(r.topic, r.partition)][o])
                         for o in range(r.start, r.end)]) for r in ranges if r.size}


def _msg(i: int, ts: float, label: bool = False) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "ts": ts, **({"label": "x"} if label else {})})


def test_one_partition_per_topic_replays_in_exactly_the_file_replay_order(tmp_path: Path) -> None:
    preds = [_msg(i, 100.0 + i) for i in range(40)]
    labels = [_msg(i, 103.5 + i, label=True) for i in range(0, 40, 3)]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(preds) + b"\n")
    (tmp_path / "l.jsonl").write_bytes(b"\n".join(labels) + b"\n")
    want = [(m.stream, m.value) for m in read_replay(tmp_path / "p.jsonl", tmp_path / "l.jsonl")]
    rng = KafkaRange("p", "l", 0, 1, (PartitionRange("p", 0, 0, 40), PartitionRange("l", 0, 0, len(labels))))
    got = list(_merged(Reader({("p", 0): preds, ("l", 0): labels}), rng))  # type: ignore[arg-type]
    assert [(m.stream, m.value) for m in got] == want
    assert {m.scope for m in got} == {0}  # one engine scope, as a file replay


def test_partitions_merge_by_their_clocks_into_one_scope() -> None:
    p0 = [_msg(i, 100.0 + 2 * i) for i in range(10)]
    p1 = [_msg(100 + i, 101.0 + 2 * i) for i in range(10)]
    rng = KafkaRange("p", None, 0, 1, (PartitionRange("p", 0, 0, 10), PartitionRange("p", 1, 0, 10)))
    got = list(_merged(Reader({("p", 0): p0, ("p", 1): p1}), rng))  # type: ignore[arg-type]
    assert sorted(m.value for m in got) == sorted(p0 + p1)
    for part in (0, 1):  # each partition stays in offset order
        offsets = [m.offset for m in got if m.partition == part]
        assert offsets == sorted(offsets)
    assert {m.scope for m in got} == {0} and {m.partition for m in got} == {0, 1}
