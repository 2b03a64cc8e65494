"""Reference periods from a file: an archived prediction log whose events define "normal" for a model.

A model's config may name ``reference_file`` (JSON Lines, optionally gzip). Detectors that accept a
``reference`` mapping (the ``drift`` detector) then start monitoring from the first event instead of
learning from the first events of the stream. The mapping carries the file's fingerprint so that
the detector's config hash, and with it every alert id, changes when the file does.
"""

from __future__ import annotations

import inspect
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.decode import DecodeError, decode_prediction
from pipeline.events import FeatureSchema, RouteKey
from pipeline.routing import build_batch
from pipeline.sources.files import fingerprint, open_lines
from pipeline.timefmt import format_ts


class ReferenceFileError(ValueError):
    """The reference file is missing, unreadable or holds no usable events for the model."""


def accepts_reference(cls: type) -> bool:
    return "reference" in inspect.signature(cls).parameters


@lru_cache(maxsize=32)
def _load(path: str, model: str, version: str | None, schema: FeatureSchema,
          time_range: tuple[float, float] = (float("-inf"), float("inf"))) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ReferenceFileError(f"reference file not found: {p}")
    events = []
    with open_lines(p) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                ev = decode_prediction(line.rstrip(b"\r\n"))
            except DecodeError:
                continue
            if (ev.model == model and (version is None or ev.model_version in (None, version))
                    and time_range[0] <= ev.ts < time_range[1]):
                events.append(ev)
    bounded = time_range != (float("-inf"), float("inf"))
    if not events:
        within = f" in [{_show(time_range[0])}, {_show(time_range[1])})" if bounded else ""
        raise ReferenceFileError(f"reference file {p} holds no valid events of model {model!r}{within}")
    batch = build_batch(RouteKey(model, version, 0), schema, events)
    return {
        "X": batch.X, "C": batch.C, "prediction": batch.prediction, "confidence": batch.confidence,
        "margin": batch.margin, "entropy": batch.entropy, "client_ids": batch.client_ids, "ts": batch.ts,
        "probabilities": batch.probabilities,
        "fingerprint": fingerprint(p, extra=repr(time_range) if bounded else ""),
        "source": str(p) + (f" [{_show(time_range[0])}, {_show(time_range[1])})" if bounded else ""),
    }


def _show(ts: float) -> str:
    """A range bound for messages: RFC 3339, or ``...`` when unbounded."""
    return "..." if math.isinf(ts) else (format_ts(ts) or "")


def load_reference(path: str | Path, route: RouteKey, schema: FeatureSchema,
                   time_range: tuple[float, float] = (float("-inf"), float("inf"))) -> dict[str, Any]:
    """The reference arrays of ``route``'s model (and version) from ``path``, laid out by ``schema``,
    from the events with ``time_range[0] <= ts < time_range[1]``."""
    return _load(str(path), route.model, route.model_version, schema, time_range)
