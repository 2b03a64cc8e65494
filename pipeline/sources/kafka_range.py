"""A time range of Kafka topics, resolved to offsets and read without a consumer group.

An audit replays ``[from, to)`` of broker (message) timestamps: for each partition the first
offset is the earliest one whose timestamp is at or after ``from`` and the end (exclusive) the
earliest one at or after ``to`` (or the partition's end offset when the replay starts, if no
message is that late). The reader is a plain consumer: ``assign`` + ``seek``, no group id, no
offset commits, no topic auto-creation, so a replay can never move a live group's offsets.

With :mod:`pipeline.sources.kafka` the only modules that import ``kafka``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka import errors as kafka_errors

from pipeline.events import RawMessage
from pipeline.sources.kafka import KafkaClientSettings, KafkaSourceError

__all__ = ["KafkaRangeReader", "OffsetLookup", "PartitionRange", "RangeError", "resolve_ranges"]


class RangeError(KafkaSourceError):
    """The range cannot be replayed (unknown topic, unreachable broker, lookup timeout)."""


@dataclass(frozen=True, slots=True, order=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """Offsets in the range (messages, unless the topic is compacted or transactional)."""
        return max(0, self.end - self.start)


class OffsetLookup(Protocol):
    """What :func:`resolve_ranges` needs from a client (a test double implements it)."""

    def partitions(self, topic: str) -> list[int] | None: ...

    def offsets_for_time(self, topic: str, partitions: list[int], ms: int) -> dict[int, int | None]: ...

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]: ...


def resolve_ranges(lookup: OffsetLookup, topics: Iterable[str], from_ms: int, to_ms: int) -> list[PartitionRange]:
    """Every partition of ``topics`` with its offsets for ``[from_ms, to_ms)``, sorted by topic then partition.

    >>> class Double:
    ...     def partitions(self, topic): return [0, 1]
    ...     def offsets_for_time(self, topic, parts, ms): return {0: 5 if ms < 100 else None, 1: None}
    ...     def end_offsets(self, topic, parts): return {0: 9, 1: 3}
    >>> resolve_ranges(Double(), ["p"], 50, 200)
    [PartitionRange(topic='p', partition=0, start=5, end=9), PartitionRange(topic='p', partition=1, start=3, end=3)]
    """
    if from_ms > to_ms:
        raise ValueError("--from is after --to")
    out: list[PartitionRange] = []
    for topic in topics:
        parts = lookup.partitions(topic)
        if not parts:
            raise RangeError(f"unknown topic {topic!r}")
        parts = sorted(parts)
        ends = lookup.end_offsets(topic, parts)  # taken first: the range never runs past the replay's start
        starts = lookup.offsets_for_time(topic, parts, from_ms)
        stops = lookup.offsets_for_time(topic, parts, to_ms)
        for p in parts:
            end = ends[p]
            stop = stops.get(p)
            stop = end if stop is None else min(stop, end)
            start = starts.get(p)
            start = stop if start is None else min(start, stop)
            out.append(PartitionRange(topic, p, start, stop))
    return out


#: Records one poll may return: more than any fetch holds (the fetch size bounds it, one partition's
#: ``max_partition_fetch_bytes``), so every poll drains what was fetched. Records a poll leaves behind
#: are not returned once their partition is paused and resumed (kafka-python 3.0): with a cap of
#: 2,000 every partition of a 100,000-event range stalled at offset 2,000.
_DRAIN = 1 << 30


class KafkaRangeReader:
    """Resolves and reads partition ranges with one group-less consumer.

    ``timeout_s`` bounds connecting and every metadata or offset lookup; a broker that does not
    answer within it is reported as unreachable.
    """

    def __init__(self, settings: KafkaClientSettings, *, timeout_s: float = 10.0, fetch_max_wait_ms: int = 200) -> None:
        self.settings = settings
        self._timeout_ms = max(1000, int(timeout_s * 1000))
        opts = settings.client_options()
        opts["request_timeout_ms"] = max(self._timeout_ms, fetch_max_wait_ms + 1000)
        try:
            self._consumer = KafkaConsumer(
                **opts,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                key_deserializer=None,
                value_deserializer=None,
                isolation_level="read_committed",
                allow_auto_create_topics=False,
                bootstrap_timeout_ms=self._timeout_ms,
                fetch_max_wait_ms=fetch_max_wait_ms,
                max_poll_records=_DRAIN,
            )
        except kafka_errors.KafkaError as exc:
            raise RangeError(f"Kafka at {settings.bootstrap_servers} is unreachable "
                             f"(no answer within {self._timeout_ms / 1000:g}s): {exc}") from exc

    # -- OffsetLookup -------------------------------------------------------------------------
    def partitions(self, topic: str) -> list[int] | None:
        try:
            self._consumer.topics()  # a metadata request for every topic (no auto-creation)
        except kafka_errors.KafkaError as exc:
            raise RangeError(f"topic metadata from {self.settings.bootstrap_servers} failed: {exc}") from exc
        parts = self._consumer.partitions_for_topic(topic)
        return sorted(parts) if parts else None

    def offsets_for_time(self, topic: str, partitions: list[int], ms: int) -> dict[int, int | None]:
        try:
            found = self._consumer.offsets_for_times({TopicPartition(topic, p): ms for p in partitions},
                                                     timeout_ms=self._timeout_ms)
        except kafka_errors.KafkaError as exc:
            raise RangeError(f"offset lookup by time on {topic} failed: {exc}") from exc
        return {tp.partition: (None if ot is None else int(ot.offset)) for tp, ot in found.items()}

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        try:
            found = self._consumer.end_offsets([TopicPartition(topic, p) for p in partitions],
                                               timeout_ms=self._timeout_ms)
        except kafka_errors.KafkaError as exc:
            raise RangeError(f"end offset lookup on {topic} failed: {exc}") from exc
        return {tp.partition: int(o) for tp, o in found.items()}

    # -- reading ------------------------------------------------------------------------------
    def resolve(self, topics: Iterable[str], from_ms: int, to_ms: int) -> list[PartitionRange]:
        return resolve_ranges(self, topics, from_ms, to_ms)

    def read(self, ranges: Iterable[PartitionRange], streams: Mapping[str, str]) -> dict[PartitionRange, Iterator[RawMessage]]:
        """A lazy iterator per non-empty range, in offset order; ``streams`` maps topic → stream name.

        All ranges are assigned to the consumer at once; an iterator fetches only its own
        partition (the others are paused meanwhile), so a merge that pulls from one partition
        at a time buffers at most one fetch per partition.
        """
        todo = [r for r in ranges if r.size > 0]
        tps = [TopicPartition(r.topic, r.partition) for r in todo]
        self._consumer.assign(tps)
        for r, tp in zip(todo, tps, strict=True):
            self._consumer.seek(tp, r.start)
        self._consumer.pause(*tps)
        return {r: self._iter(r, tp, streams.get(r.topic, r.topic)) for r, tp in zip(todo, tps, strict=True)}

    def _iter(self, r: PartitionRange, tp: TopicPartition, stream: str) -> Iterator[RawMessage]:
        idle_ms = 0
        while True:
            position = self._consumer.position(tp, timeout_ms=self._timeout_ms)
            if position is None or position >= r.end:
                return
            self._consumer.resume(tp)
            try:
                fetched = self._consumer.poll(timeout_ms=500, max_records=_DRAIN)
            except kafka_errors.KafkaError as exc:
                raise RangeError(f"reading {r.topic}[{r.partition}] failed: {exc}") from exc
            finally:
                self._consumer.pause(tp)
            records = fetched.get(tp, [])
            if not records:
                idle_ms += 500
                if idle_ms >= self._timeout_ms:
                    raise RangeError(f"no data from {r.topic}[{r.partition}] at offset {position} "
                                     f"within {self._timeout_ms / 1000:g}s (range ends at {r.end})")
                continue
            idle_ms = 0
            for rec in records:
                if rec.offset >= r.end:
                    return
                yield RawMessage(stream=stream, source=r.topic, partition=r.partition, offset=rec.offset,
                                 value=rec.value if rec.value is not None else b"", key=rec.key)

    def close(self) -> None:
        """Close the connections (there is no group to leave and nothing to commit)."""
        self._consumer.close(autocommit=False)

    def __enter__(self) -> KafkaRangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
