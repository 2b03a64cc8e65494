"""Archived prediction logs: JSON Lines files (optionally gzip), merged by ``ts`` with a labels file."""

from __future__ import annotations

import gzip
import hashlib
import heapq
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson

from pipeline.events import RawMessage
from pipeline.memory import RobustClock
from pipeline.timefmt import TimestampError, parse_ts

PREDICTIONS_SOURCE = "file:predictions"
LABELS_SOURCE = "file:labels"


def open_lines(path: Path) -> IO[bytes]:
    """Open a JSON Lines file, transparently gunzipping ``.gz`` (checked by magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def fingerprint(*paths: Path | None, extra: str = "") -> str:
    """SHA-256 over the files' bytes (and ``extra``, e.g. a config hash)."""
    h = hashlib.sha256()
    for p in paths:
        if p is None:
            h.update(b"\x00none")
            continue
        h.update(b"\x00file")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    h.update(extra.encode())
    return h.hexdigest()


class ReadProgress:
    """Compressed bytes read so far across the replay's files (for a progress bar)."""

    def __init__(self, *paths: Path | None) -> None:
        self.total = sum(p.stat().st_size for p in paths if p is not None)
        self._handles: list[IO[bytes]] = []
        self._last: list[int] = []

    def watch(self, raw: IO[bytes]) -> None:
        self._handles.append(raw)
        self._last.append(0)

    @property
    def done(self) -> int:
        for i, h in enumerate(self._handles):
            if not h.closed:
                self._last[i] = h.tell()
        return min(sum(self._last), self.total)


def _lines(path: Path, stream: str, source: str, start: int,
           progress: ReadProgress | None = None) -> Iterator[RawMessage]:
    """Messages of one file from line ``start`` on (0-based); blank lines are skipped."""
    with open_lines(path) as fh:
        if progress is not None:
            progress.watch(getattr(fh, "fileobj", None) or fh)
        for lineno, line in enumerate(fh):
            if lineno < start:
                continue
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue
            yield RawMessage(stream, source, 0, lineno, value)


def _message_ts(value: bytes) -> float | None:
    """The ``ts`` of a message, or None when it has none that parses (it is dead-lettered later)."""
    try:
        obj = orjson.loads(value)
        return parse_ts(obj["ts"])[0] if isinstance(obj, dict) and "ts" in obj else None
    except (orjson.JSONDecodeError, TimestampError, TypeError):
        return None


#: Lines before a resume position re-read to warm up the merge clock (its median spans 9 lines).
MERGE_WARMUP_LINES = 64


def _warmup_ts(path: Path, start: int) -> list[float]:
    """The readable ``ts`` of the :data:`MERGE_WARMUP_LINES` lines before line ``start``."""
    if start <= 0:
        return []
    out: list[float] = []
    with open_lines(path) as fh:
        for lineno, line in enumerate(fh):
            if lineno >= start:
                break
            if lineno >= start - MERGE_WARMUP_LINES and (ts := _message_ts(line.rstrip(b"\r\n"))) is not None:
                out.append(ts)
    return out


def read_replay(predictions: Path, labels: Path | None = None,
                positions: dict[str, int] | None = None,
                progress: ReadProgress | None = None) -> Iterator[RawMessage]:
    """The replay stream: predictions merged with labels by time (stable: predictions first on ties).

    Each file is keyed by its own outlier-robust, monotone clock (:class:`RobustClock`), not by raw
    ``ts``: the merge assumes sorted inputs, and raw ``ts`` lets one wrong clock reorder hours.

    ``positions`` (``"file:predictions:0" → next line``) resumes after a checkpoint.
    """
    positions = positions or {}
    preds = _lines(predictions, "predictions", PREDICTIONS_SOURCE, positions.get(f"{PREDICTIONS_SOURCE}:0", 0), progress)
    if labels is None:
        yield from preds
        return
    label_start = positions.get(f"{LABELS_SOURCE}:0", 0)
    labs = _lines(labels, "labels", LABELS_SOURCE, label_start, progress)
    pred_warmup = _warmup_ts(predictions, positions.get(f"{PREDICTIONS_SOURCE}:0", 0))
    yield from merge_by_clock([preds, labs], [pred_warmup, _warmup_ts(labels, label_start)])


def merge_by_clock(inputs: Sequence[Iterator[RawMessage]],
                   warmups: Sequence[list[float]] | None = None) -> Iterator[RawMessage]:
    """Merge streams in the replay order: each keyed by its own :class:`RobustClock`, ties going to
    the earlier input. The predictions and labels files of a replay are merged this way, and so are
    the partitions of a Kafka range replay."""
    warm = warmups or [[] for _ in inputs]
    for item in heapq.merge(*(_keyed(msgs, rank, w) for rank, (msgs, w) in enumerate(zip(inputs, warm, strict=True)))):
        yield item.msg


class _Keyed:
    __slots__ = ("key", "msg")

    def __init__(self, key: tuple[float, int, int], msg: RawMessage) -> None:
        self.key = key
        self.msg = msg

    def __lt__(self, other: _Keyed) -> bool:
        return self.key < other.key


def _keyed(messages: Iterator[RawMessage], rank: int, warmup: list[float]) -> Iterator[_Keyed]:
    """Sort keys for one file: its :class:`RobustClock`, so that one line with a skewed ``ts`` (hours
    ahead, say) cannot hold the whole file back while the other file's lines go past it."""
    clock = RobustClock()
    for earlier in warmup:
        clock.update(earlier)
    for msg in messages:
        ts = _message_ts(msg.value)
        key = clock.update(ts) if ts is not None else clock.value
        yield _Keyed((key, rank, msg.offset), msg)
