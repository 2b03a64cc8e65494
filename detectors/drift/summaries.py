"""Readable summaries of binned counts (a window's or the reference's): interpolated median and
spread, binned KS distance, and a class channel's mean probability."""

from __future__ import annotations

from typing import Any

import numpy as np


def summaries(model: dict[str, Any], counts: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolated current median and spread, and binned KS distance, of numeric channels."""
    m = model
    n_num = m["n_num"]
    cnt = counts[:n_num, :n_bins]
    tot = np.maximum(cnt.sum(1, keepdims=True), 1e-12)
    cw = np.cumsum(cnt, 1) / tot
    edges = m["edges"]
    lo = np.concatenate([m["lo_hi"][:, :1], edges], axis=1)
    hi = np.concatenate([edges, m["lo_hi"][:, 1:]], axis=1)
    hi = np.where(np.isfinite(hi), hi, m["lo_hi"][:, 1:])
    lo = np.where(np.isfinite(lo), lo, hi)

    def quant(qv: float) -> np.ndarray:
        b = np.argmax(cw >= qv - 1e-12, axis=1)
        r = np.arange(n_num)
        prev = np.where(b > 0, cw[r, np.maximum(b - 1, 0)], 0.0)
        width = np.maximum(cw[r, b] - prev, 1e-12)
        f = np.clip((qv - prev) / width, 0.0, 1.0)
        return np.asarray(lo[r, b] + f * (hi[r, b] - lo[r, b]))

    med = quant(0.5)
    spread = (quant(0.75) - quant(0.25)) / 1.349
    ks = np.abs(cw - np.cumsum(m["ref_p"], 1)).max(1)
    return med, spread, ks


def prob_mean(model: dict[str, Any], counts: np.ndarray, i: int, n_bins: int) -> float:
    """Current mean probability of class channel ``i`` from a window's bin counts (reference bin means)."""
    bm = model["prob_binmean"][i]
    cnt = counts[:n_bins]
    ok = np.isfinite(bm) & (cnt > 0)
    tot = float(cnt[ok].sum())
    return float((cnt[ok] * bm[ok]).sum() / tot) if tot > 0 else float("nan")
