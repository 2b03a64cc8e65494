"""The reference buffer: a route's first events, kept (and snapshotted) until the reference is complete."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.events import EventBatch

_KEYS = ("X", "C", "pred", "pval", "out", "prob", "cid", "ts")


class ReferenceBuffer:
    """Column parts of the buffered events: features ``X`` and ``C``, predictions ``pred`` and
    their numeric values ``pval``, output summaries ``out``, aligned probabilities ``prob``,
    caller codes ``cid`` and timestamps ``ts``."""

    def __init__(self) -> None:
        self.parts: dict[str, list[Any]] = {k: [] for k in _KEYS}

    def append(self, batch: EventBatch, outs: np.ndarray, probs: np.ndarray, codes: np.ndarray, take: int) -> None:
        """Buffer the first ``take`` events of ``batch`` (with its outputs, probabilities and caller codes)."""
        sl = slice(0, take)
        p = self.parts
        p["X"].append(batch.X[sl])
        p["C"].append(batch.C[sl])
        p["pred"].extend(batch.prediction[:take])
        p["pval"].append(batch.prediction_value[sl])
        p["out"].append(outs[sl])
        p["prob"].append(probs[sl])
        p["cid"].append(codes[sl])
        p["ts"].append(batch.ts[sl])

    def arrays(self) -> tuple[
        np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
    ]:
        """The buffered events as arrays: ``X, C, pred, pval, out, cid, ts, prob``."""
        rb = self.parts
        return (
            np.concatenate(rb["X"]),
            np.concatenate(rb["C"]) if rb["C"] else np.empty((0, 0), object),
            list(rb["pred"]),
            np.concatenate(rb["pval"]),
            np.concatenate(rb["out"]),
            np.concatenate(rb["cid"]),
            np.concatenate(rb["ts"]),
            np.concatenate(rb["prob"]),
        )

    def state(self) -> dict[str, Any]:
        """Snapshot: one array (or list) per column."""
        rb = self.parts
        st: dict[str, Any] = {
            "X": np.concatenate(rb["X"]) if rb["X"] else np.empty((0, 0)),
            "C": np.concatenate(rb["C"]) if rb["C"] else np.empty((0, 0), object),
            "pred": list(rb["pred"]),
            "pval": np.concatenate(rb["pval"]) if rb["pval"] else np.empty(0),
            "out": np.concatenate(rb["out"]) if rb["out"] else np.empty((0, 3)),
            "prob": np.concatenate(rb["prob"]) if rb["prob"] else np.empty((0, 0)),
            "cid": np.concatenate(rb["cid"]) if rb["cid"] else np.empty(0, np.int64),
            "ts": np.concatenate(rb["ts"]) if rb["ts"] else np.empty(0),
        }
        st["C"] = st["C"].tolist()
        return st

    def load(self, r: dict[str, Any], n_buf: int) -> None:
        """Restore a snapshot of ``n_buf`` buffered events (nothing to restore when 0)."""
        if not n_buf:
            return
        self.parts = {
            "X": [np.asarray(r["X"], dtype=np.float64)],
            "C": [np.array(r["C"], dtype=object).reshape(n_buf, -1)],
            "pred": list(r["pred"]),
            "pval": [np.asarray(r["pval"], dtype=np.float64)],
            "out": [np.asarray(r["out"], dtype=np.float64)],
            "prob": [np.asarray(r["prob"], dtype=np.float64).reshape(n_buf, -1)],
            "cid": [np.asarray(r["cid"], dtype=np.int64)],
            "ts": [np.asarray(r["ts"], dtype=np.float64)],
        }
