"""Serialise generated traffic: JSON Lines (gzip when the path ends in ``.gz``) via orjson."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline.traffic.generator import Traffic, TrafficPlan
from pipeline.traffic.timefmt import rfc3339_ms
from pipeline.traffic.truth import GroundTruth

#: fast compression: level 9 would triple the time of writing float-heavy lines for ~10% smaller files
_GZIP_LEVEL = 3


def encode_message(msg: dict[str, Any], *, rfc3339: bool = True) -> bytes:
    """One message as compact JSON bytes (no newline); ``ts`` as an RFC 3339 string by default.

    >>> encode_message({"event_id": "a", "ts": 1767225601.25, "label": "x"})
    b'{"event_id":"a","ts":"2026-01-01T00:00:01.250Z","label":"x"}'
    """
    if rfc3339 and isinstance(msg.get("ts"), float | int):
        msg = {**msg, "ts": rfc3339_ms(float(msg["ts"]))}
    return orjson.dumps(msg)


@contextmanager
def _open_out(path: str | Path) -> Iterator[IO[bytes]]:
    path = Path(path)
    with open(path, "wb") as raw:
        if path.suffix == ".gz":
            # mtime=0 and no file name in the header keep compressed output byte-identical
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=_GZIP_LEVEL) as gz:
                yield gz  # type: ignore[misc]
        else:
            yield raw


def write_jsonl(
    traffic: Traffic | TrafficPlan, predictions_path: str | Path, labels_path: str | Path | None = None,
    *, rfc3339: bool = True,
) -> tuple[int, int]:  # fmt: skip
    """Write predictions (and labels, when a path is given) as JSON Lines; returns both counts.

    A :class:`TrafficPlan` is streamed chunk by chunk with bounded memory.
    """
    n_pred = n_lab = 0
    with ExitStack() as stack:
        fp = stack.enter_context(_open_out(predictions_path))
        fl = stack.enter_context(_open_out(labels_path)) if labels_path is not None else None
        if isinstance(traffic, Traffic):
            fp.writelines(encode_message(m, rfc3339=rfc3339) + b"\n" for m in traffic.predictions)
            n_pred = len(traffic.predictions)
            if fl is not None:
                fl.writelines(encode_message(m, rfc3339=rfc3339) + b"\n" for m in traffic.labels)
                n_lab = len(traffic.labels)
        else:
            for stream, msg in traffic.iter_events():
                if stream == "prediction":
                    fp.write(encode_message(msg, rfc3339=rfc3339) + b"\n")
                    n_pred += 1
                elif fl is not None:
                    fl.write(encode_message(msg, rfc3339=rfc3339) + b"\n")
                    n_lab += 1
    return n_pred, n_lab


def write_truth(truth: GroundTruth, path: str | Path) -> None:
    """Write the ground truth as indented JSON."""
    Path(path).write_text(json.dumps(truth.to_dict(), indent=1) + "\n", encoding="utf-8")
