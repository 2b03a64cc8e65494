"""Replay a time range of Kafka topics as a named run, for audits.

The range ``[from, to)`` of broker timestamps is resolved to offsets per partition once, at the
start (see :mod:`pipeline.sources.kafka_range`); the run records those offsets, and its default
name is a fingerprint of them and of the config, so the same range replayed again is the same
run with the same alerts. By default the partitions of each topic are merged, and then predictions
with labels, exactly as a file replay merges its two files (:func:`merge_by_clock`), into one engine
scope: a Kafka range replay scores what a file replay of the range archived as one predictions
file and one labels file would score. With ``per_partition``, every partition keeps its own engine
scope (partition ``p`` of the labels topic joins partition ``p`` of the predictions topic), as a
live run keeps them: a range that starts where a live consumer group started reproduces that live
run's alerts. It reads without a consumer group and commits nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from pipeline.config import MonitorConfig
from pipeline.events import RawMessage
from pipeline.replay import ReplayInputError, claim_run, feed
from pipeline.runner import Pipeline, RunTotals
from pipeline.sources.files import merge_by_clock
from pipeline.sources.kafka import KafkaClientSettings
from pipeline.sources.kafka_range import KafkaRangeReader, PartitionRange
from pipeline.storage.store import Store
from pipeline.timefmt import rfc3339_ms


@dataclass(frozen=True)
class KafkaRange:
    """The times asked for and the offsets they resolved to (what an audit states was replayed)."""

    predictions_topic: str
    labels_topic: str | None
    from_ms: int
    to_ms: int
    ranges: tuple[PartitionRange, ...]
    per_partition: bool = False  # one engine scope per partition (as a live run) instead of one merged scope

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)

    def fingerprint(self) -> str:
        """SHA-256 of the topics and resolved offsets (not of the times: they only chose the offsets)."""
        doc: dict[str, object] = {"predictions": self.predictions_topic, "labels": self.labels_topic,
                                  "ranges": [[r.topic, r.partition, r.start, r.end] for r in self.ranges]}
        if self.per_partition:
            doc["scopes"] = "partition"
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def describe(self, bootstrap: str) -> str:
        """``kafka://HOST/topic[p:start-end ...] + labels[...] (from .. to)``, stored as the run's source."""
        def topic(name: str) -> str:
            parts = " ".join(f"{r.partition}:{r.start}-{r.end}" for r in self.ranges if r.topic == name)
            return f"{name}[{parts}]"

        topics = topic(self.predictions_topic) + (f" + {topic(self.labels_topic)}" if self.labels_topic else "")
        scopes = ", one scope per partition" if self.per_partition else ""
        return (f"kafka://{bootstrap}/{topics} (broker time {rfc3339_ms(self.from_ms / 1000)} "
                f"to {rfc3339_ms(self.to_ms / 1000)}, end exclusive{scopes})")


@dataclass(frozen=True)
class KafkaReplaySummary:
    """``run`` is None when the range held no message (nothing was replayed, no run was made)."""

    run: str | None
    totals: RunTotals
    range: KafkaRange
    already_complete: bool
    resumed: bool = False  # a Kafka replay never resumes mid-range (see replay_kafka)


def derive_run_name(rng: KafkaRange, config: MonitorConfig) -> str:
    """``replay-kafka-<12 hex>`` from the resolved offsets and the config hash (never the clock)."""
    return "replay-kafka-" + hashlib.sha256((rng.fingerprint() + config.config_hash()).encode()).hexdigest()[:12]


def replay_kafka(
    store: Store,
    config: MonitorConfig,
    settings: KafkaClientSettings,
    *,
    predictions_topic: str,
    labels_topic: str | None,
    from_ms: int,
    to_ms: int,
    run: str | None = None,
    timeout_s: float = 10.0,
    per_partition: bool = False,
    on_resolved: Callable[[KafkaRange], None] | None = None,
    on_batch: Callable[[int, KafkaRange, RunTotals], None] | None = None,
) -> KafkaReplaySummary:
    """Replay ``[from_ms, to_ms)`` of ``predictions_topic`` (and ``labels_topic``) into ``store``.

    An interrupted run of the same range starts again from the range's first offsets: every write
    is idempotent and the result is that of an uninterrupted replay. A finished one is left as is.
    """
    if from_ms > to_ms:
        raise ReplayInputError("--from is after --to")
    if labels_topic == predictions_topic:
        raise ReplayInputError("the predictions and labels topics must differ")
    topics = [predictions_topic] + ([labels_topic] if labels_topic else [])
    with KafkaRangeReader(settings, timeout_s=timeout_s) as reader:
        rng = KafkaRange(predictions_topic, labels_topic, from_ms, to_ms,
                         tuple(reader.resolve(topics, from_ms, to_ms)), per_partition)
        if on_resolved is not None:
            on_resolved(rng)
        if rng.size == 0:
            return KafkaReplaySummary(None, RunTotals(), rng, already_complete=False)
        fp = rng.fingerprint()
        name = run or derive_run_name(rng, config)
        pipeline = Pipeline(store, config, name, "replay", rng.describe(settings.bootstrap_servers), fp)
        if claim_run(pipeline, fp):  # finished before: left as it was, finish time included
            return KafkaReplaySummary(name, pipeline.totals, rng, already_complete=True)
        done = 0

        def after_batch() -> None:
            if on_batch is not None:
                on_batch(done, rng, pipeline.totals)

        def counted(messages: Iterator[RawMessage]) -> Iterator[RawMessage]:
            nonlocal done
            for msg in messages:
                done += 1
                yield msg

        messages = _by_partition(reader, rng) if rng.per_partition else _merged(reader, rng)
        feed(pipeline, counted(messages), after_batch)
        pipeline.finish()
    return KafkaReplaySummary(name, pipeline.totals, rng, already_complete=False)


def _merged(reader: KafkaRangeReader, rng: KafkaRange) -> Iterator[RawMessage]:
    """The range as one stream in file-replay order, all in engine scope 0 (as a file replay)."""
    streams = {rng.predictions_topic: "predictions"}
    if rng.labels_topic:
        streams[rng.labels_topic] = "labels"
    parts = reader.read(rng.ranges, streams)

    def topic(name: str) -> Iterator[RawMessage]:
        return merge_by_clock([it for r, it in sorted(parts.items()) if r.topic == name])

    merged = topic(rng.predictions_topic)
    if rng.labels_topic:
        merged = merge_by_clock([merged, topic(rng.labels_topic)])
    for msg in merged:
        yield replace(msg, scope=0)


def _by_partition(reader: KafkaRangeReader, rng: KafkaRange) -> Iterator[RawMessage]:
    """The range partition after partition, each in its own engine scope (its partition number, as
    a live run keeps it): partition ``p``'s predictions merged with partition ``p``'s labels by
    clock (producers key both topics alike, so an event's label lands in the same partition
    number), predictions first on ties."""
    streams = {rng.predictions_topic: "predictions"}
    if rng.labels_topic:
        streams[rng.labels_topic] = "labels"
    parts = reader.read(rng.ranges, streams)
    order = {rng.predictions_topic: 0, rng.labels_topic: 1}
    for p in sorted({r.partition for r in parts}):
        mine = sorted((r for r in parts if r.partition == p), key=lambda r: order[r.topic])
        yield from merge_by_clock([parts[r] for r in mine])
