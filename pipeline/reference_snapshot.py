"""Freeze a time range of a Kafka predictions topic into a reference file.

A drift reference has to outlive the topic's retention. A run's config hash, and with it every
alert id, covers the reference file's bytes, so an audit replay months later must find the very
same reference events. A Kafka time range therefore becomes a reference by being written once to
a file, which the config then names as ``reference_file``:

- the range ``[from, to)`` of broker timestamps is resolved to offsets per partition, as
  ``replay --kafka`` resolves it, and the offsets are recorded next to the file;
- the partitions are merged in replay order (:func:`merge_by_clock`), and every message that is
  a valid prediction log is written as one JSON line; the others are counted and left out;
- the file is written deterministically (gzip without a timestamp, into a temporary file that is
  renamed only when complete): the same offsets give the same bytes, so the same config hash.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pipeline.decode import DecodeError, decode_prediction
from pipeline.events import RawMessage
from pipeline.kafka_replay import KafkaRange
from pipeline.sources.files import fingerprint, merge_by_clock
from pipeline.sources.kafka import KafkaClientSettings
from pipeline.sources.kafka_range import KafkaRangeReader


class SnapshotError(ValueError):
    """The snapshot cannot be written (the output exists, or the range holds no prediction)."""


@dataclass(frozen=True)
class ReferenceSnapshot:
    """What was written: the file, the offsets it came from, and its events per model."""

    path: Path
    range: KafkaRange
    events: int
    skipped: int  # messages in the range that are not valid prediction logs (not written)
    models: dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    def provenance(self, bootstrap: str) -> dict[str, object]:
        """The sidecar document (``<file>.source.json``): where the reference came from."""
        return {
            "source": self.range.describe(bootstrap),
            "topic": self.range.predictions_topic,
            "from_ms": self.range.from_ms,
            "to_ms": self.range.to_ms,
            "offsets": [{"partition": r.partition, "start": r.start, "end": r.end} for r in self.range.ranges],
            "events": self.events,
            "skipped": self.skipped,
            "models": self.models,
            "sha256": self.sha256,
        }


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".source.json")


def snapshot_reference(settings: KafkaClientSettings, topic: str, from_ms: int, to_ms: int, out: Path, *,
                       timeout_s: float = 10.0, max_message_bytes: int = 1 << 20) -> ReferenceSnapshot:
    """Write the valid prediction logs of ``topic`` with broker timestamps in ``[from_ms, to_ms)`` to
    ``out`` (gzip when its name ends in ``.gz``), and their provenance to ``<out>.source.json``."""
    if from_ms > to_ms:
        raise SnapshotError("--from is after --to")
    for path in (out, sidecar_path(out)):
        if path.exists():
            raise SnapshotError(f"{path} exists: a reference file is never overwritten "
                                "(alert ids depend on its bytes); remove it or choose another path")
    with KafkaRangeReader(settings, timeout_s=timeout_s) as reader:
        rng = KafkaRange(topic, None, from_ms, to_ms, tuple(reader.resolve([topic], from_ms, to_ms)))
        parts = reader.read(rng.ranges, {topic: "predictions"})
        merged = merge_by_clock([it for _, it in sorted(parts.items())])
        events, skipped, models = _write(merged, out, max_message_bytes)
    if events == 0:
        out.unlink()
        raise SnapshotError(f"no valid prediction log of {topic} has a broker timestamp in the range "
                            f"({rng.size} messages, {skipped} invalid): nothing written")
    snap = ReferenceSnapshot(out, rng, events, skipped, dict(sorted(models.items())), fingerprint(out))
    tmp = sidecar_path(out).with_suffix(".tmp")
    tmp.write_text(json.dumps(snap.provenance(settings.bootstrap_servers), indent=2) + "\n")
    os.replace(tmp, sidecar_path(out))
    return snap


def _write(messages: Iterator[RawMessage], out: Path, max_bytes: int) -> tuple[int, int, Counter[str]]:
    """Stream the valid predictions into ``out`` through a temporary file; returns the counts."""
    tmp = out.with_name(out.name + ".tmp")
    events = skipped = 0
    models: Counter[str] = Counter()
    try:
        with open(tmp, "wb") as raw:
            sink = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if out.name.endswith(".gz") else raw
            for msg in messages:
                try:
                    event = decode_prediction(msg.value or b"", max_bytes)
                except DecodeError:
                    skipped += 1
                    continue
                line = msg.value
                if b"\n" in line or b"\r" in line:  # pretty-printed JSON: one line per event in the file
                    line = orjson.dumps(orjson.loads(line))
                sink.write(line + b"\n")
                events += 1
                models[event.model] += 1
            if sink is not raw:
                sink.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return events, skipped, models
