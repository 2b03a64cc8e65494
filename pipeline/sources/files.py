"""Archived prediction logs: JSON Lines files (optionally gzip), merged by ``ts`` with a labels file."""

from __future__ import annotations

import gzip
import hashlib
import heapq
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from pipeline.events import RawMessage
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


def _sort_ts(msg: RawMessage, previous: float) -> float:
    """The ``ts`` a message sorts by; unreadable ones keep their file's previous position."""
    try:
        obj = orjson.loads(msg.value)
        return parse_ts(obj["ts"])[0] if isinstance(obj, dict) and "ts" in obj else previous
    except (orjson.JSONDecodeError, TimestampError, TypeError):
        return previous


def read_replay(predictions: Path, labels: Path | None = None,
                positions: dict[str, int] | None = None,
                progress: ReadProgress | None = None) -> Iterator[RawMessage]:
    """The replay stream: predictions merged with labels by ``ts`` (stable: predictions first on ties).

    ``positions`` (``"file:predictions:0" → next line``) resumes after a checkpoint.
    """
    positions = positions or {}
    preds = _lines(predictions, "predictions", PREDICTIONS_SOURCE, positions.get(f"{PREDICTIONS_SOURCE}:0", 0), progress)
    if labels is None:
        yield from preds
        return
    labs = _lines(labels, "labels", LABELS_SOURCE, positions.get(f"{LABELS_SOURCE}:0", 0), progress)
    for item in heapq.merge(_keyed(preds, 0), _keyed(labs, 1)):
        yield item.msg


class _Keyed:
    __slots__ = ("key", "msg")

    def __init__(self, key: tuple[float, int, int], msg: RawMessage) -> None:
        self.key = key
        self.msg = msg

    def __lt__(self, other: _Keyed) -> bool:
        return self.key < other.key


def _keyed(messages: Iterator[RawMessage], rank: int) -> Iterator[_Keyed]:
    previous = float("-inf")
    for msg in messages:
        previous = _sort_ts(msg, previous)
        yield _Keyed((previous, rank, msg.offset), msg)
