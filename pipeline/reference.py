"""Reference periods from a file: an archived prediction log whose events define "normal" for a model.

A model's config may name ``reference_file`` (JSON Lines, optionally gzip). Detectors that accept a
``reference`` mapping (the ``drift`` detector) then start monitoring from the first event instead of
learning from the first events of the stream. The mapping carries the file's fingerprint so that
the detector's config hash, and with it every alert id, changes when the file does.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.decode import DecodeError, decode_prediction
from pipeline.events import FeatureSchema, RouteKey
from pipeline.routing import build_batch
from pipeline.sources.files import fingerprint, open_lines


class ReferenceFileError(ValueError):
    """The reference file is missing, unreadable or holds no usable events for the model."""


def accepts_reference(cls: type) -> bool:
    return "reference" in inspect.signature(cls).parameters


@lru_cache(maxsize=32)
def _load(path: str, model: str, version: str | None, schema: FeatureSchema) -> dict[str, Any]:
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
            if ev.model == model and (version is None or ev.model_version in (None, version)):
                events.append(ev)
    if not events:
        raise ReferenceFileError(f"reference file {p} holds no valid events of model {model!r}")
    batch = build_batch(RouteKey(model, version, 0), schema, events)
    return {
        "X": batch.X, "C": batch.C, "prediction": batch.prediction, "confidence": batch.confidence,
        "margin": batch.margin, "entropy": batch.entropy, "client_ids": batch.client_ids, "ts": batch.ts,
        "fingerprint": fingerprint(p), "source": str(p),
    }


def load_reference(path: str | Path, route: RouteKey, schema: FeatureSchema) -> dict[str, Any]:
    """The reference arrays of ``route``'s model (and version) from ``path``, laid out by ``schema``."""
    return _load(str(path), route.model, route.model_version, schema)
