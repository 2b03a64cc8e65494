"""Replay a time range of Kafka topics as a named run, for audits.

The range ``[from, to)`` of broker timestamps is resolved to offsets per partition once, at the
start (see :mod:`pipeline.sources.kafka_range`); the run records those offsets, and its default
name is a fingerprint of them and of the config, so the same range replayed again is the same
run with the same alerts. The partitions of each topic are merged, and then predictions with
labels, exactly as a file replay merges its two files (:func:`merge_by_clock`), into one engine
scope: a Kafka range replay scores what a file replay of the range archived as one predictions
file and one labels file would score. It reads without a consumer group and commits nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from pipeline.config import MonitorConfig
from pipeline.events import RawMessage
from pipeline.replay import ReplayInputError, feed
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

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)

    def fingerprint(self) -> str:
        """SHA-256 of the topics and resolved offsets (not of the times: they only chose the offsets)."""
        doc = {"predictions": self.predictions_topic, "labels": self.labels_topic,
               "ranges": [[r.topic, r.partition, r.start, r.end] for r in self.ranges]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def describe(self, bootstrap: str) -> str:
        """``kafka://HOST/topic[p:start-end ...] + labels[...] (from .. to)``, stored as the run's source."""
        def topic(name: str) -> str:
            parts = " ".join(f"{r.partition}:{r.start}-{r.end}" for r in self.ranges if r.topic == name)
            return f"{name}[{parts}]"

        topics = topic(self.predictions_topic) + (f" + {topic(self.labels_topic)}" if self.labels_topic else "")
        return (f"kafka://{bootstrap}/{topics} (broker time {rfc3339_ms(self.from_ms / 1000)} "
                f"to {rfc3339_ms(self.to_ms / 1000)}, end exclusive)")


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
                         tuple(reader.resolve(topics, from_ms, to_ms)))
        if on_resolved is not None:
            on_resolved(rng)
        if rng.size == 0:
            return KafkaReplaySummary(None, RunTotals(), rng, already_complete=False)
        fp = rng.fingerprint()
        name = run or derive_run_name(rng, config)
        pipeline = Pipeline(store, config, name, "replay", rng.describe(settings.bootstrap_servers), fp)
        existing = pipeline.existing
        if existing is not None and existing["input_fingerprint"] != fp:
            store.finish_run(name, existing["status"])
            raise ReplayInputError(f"run {name!r} already holds other input; choose another --run name")
        if existing is not None and existing["status"] == "finished":
            store.finish_run(name, "finished")
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

        feed(pipeline, counted(_merged(reader, rng)), after_batch)
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
