"""Channels: the numeric matrix of an event batch (features, output summaries, class probabilities,
principal components) and its per-channel bins under a fitted reference model."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.events import FeatureSchema

OUTPUTS = ("confidence", "margin", "entropy")


def numeric_names(schema: FeatureSchema, d: int) -> list[str]:
    """Names of the ``d`` numeric features (``f<i>`` when the schema does not list ``d`` of them)."""
    names = list(schema.numeric)
    return names if len(names) == d else [f"f{i}" for i in range(d)]


def categorical_names(schema: FeatureSchema, k: int) -> list[str]:
    """Names of the ``k`` categorical features (``c<i>`` when the schema does not list ``k`` of them)."""
    names = list(schema.categorical)
    return names if len(names) == k else [f"c{i}" for i in range(k)]


def robust_scale(X: np.ndarray, med: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Median/MAD-scaled values, winsorised to +-5, missing as 0 (the PCA's input)."""
    Z = (X - med) / scale
    Z = np.clip(Z, -5.0, 5.0)
    return np.where(np.isnan(Z), 0.0, Z)


def select_classes(
    probs: np.ndarray | None, w: np.ndarray, classes: tuple[str, ...] | None, max_class_channels: int
) -> tuple[list[int], list[str]]:
    """Probability columns monitored as channels: the most probable classes of the reference.

    Classes given (finite) in most kept reference events, ranked by mean probability (ties by
    name), at most ``max_class_channels``. When all classes but one fit, the most probable class
    is left out: its probability is one minus the others' (a binary model keeps only its rarer
    class), and a collinear column would only cost the joint test a degree of freedom.
    """
    if probs is None or probs.ndim != 2 or probs.shape[1] == 0 or max_class_channels == 0:
        return [], []
    classes = classes or tuple(str(i) for i in range(probs.shape[1]))
    kept = w > 0
    P = probs[kept]
    fin = np.isfinite(P)
    ok = [j for j in range(P.shape[1]) if fin[:, j].mean() > 0.5]
    if len(ok) < 2:
        return [], []
    mean = {j: float(P[fin[:, j], j].mean()) for j in ok}
    order = sorted(ok, key=lambda j: (-mean[j], classes[j]))
    if len(order) - 1 <= max_class_channels:
        order = order[1:]  # the most probable class is one minus the others: no information
    order = order[:max_class_channels]
    return order, [classes[j] for j in order]


def numeric_matrix(
    X: np.ndarray, outs: np.ndarray, pval: np.ndarray, model: dict[str, Any], probs: np.ndarray | None = None
) -> np.ndarray:
    """The numeric channels' values (n x ``n_num``): features, output summaries, class probabilities,
    numeric prediction, principal components with their squared norm and the squared residual."""
    parts = [X]
    has_out = model["has_out"]
    if any(has_out):
        parts.append(outs[:, [j for j in range(3) if has_out[j]]])
    pc = model.get("prob_cols", [])
    if len(pc):
        if probs is None or probs.shape[1] <= max(pc):
            parts.append(np.full((len(X), len(pc)), np.nan))
        else:
            parts.append(probs[:, pc])
    if model["pred_kind"] == "numeric":
        parts.append(pval[:, None])
    if model["ncomp"]:
        Z = robust_scale(X, model["pca_med"], model["pca_scale"])
        # einsum's own loops keep every row's rounding independent of the batch size (BLAS
        # blocking does not), so bins and findings do not depend on where batches were cut
        B = np.einsum("ij,jk->ik", Z, model["pca_basis"])
        Y = B * model["pca_isd"]
        parts.append(Y)
        parts.append((Y**2).sum(1, keepdims=True))
        parts.append(((Z**2).sum(1) - (B**2).sum(1))[:, None])
    return np.hstack(parts) if len(parts) > 1 else X


def assign_bins(
    Zn: np.ndarray, C: np.ndarray, pred: list[str] | None, model: dict[str, Any], missing_bin: int
) -> np.ndarray:
    """Bin of every event in every channel (n x channels, ``uint8``): numeric values by the reference
    edges, categories by the reference's frequent ones (then ``other``), missing to ``missing_bin``."""
    n = Zn.shape[0]
    names = model["names"]
    out = np.empty((n, len(names)), dtype=np.uint8)
    edges = model["edges"]
    nn = Zn.shape[1]
    # bin = number of edges <= value (``searchsorted(..., side="right")``), vectorised over
    # channels; padded edges are +inf and NaN compares false, then goes to the missing bin
    b = np.zeros((n, nn), dtype=np.uint8)
    ge = np.empty((n, nn), dtype=bool)
    for e_k in np.ascontiguousarray(edges.T):
        np.greater_equal(Zn, e_k, out=ge)
        np.add(b, ge.view(np.uint8), out=b)  # no temporaries, no bool -> uint8 cast loop
    b[np.isnan(Zn)] = missing_bin
    out[:, :nn] = b
    n_num = model["n_num"]
    cols: list[list[Any]] = [list(C[:, j]) for j in range(C.shape[1])]
    if model["pred_kind"] == "categorical":
        cols.append(pred if pred is not None else [None] * n)
    for j, (col, cmap) in enumerate(zip(cols, model["cat_maps"], strict=True)):
        other = len(cmap)
        mb = missing_bin
        lut = {v: (mb if v is None else cmap.get(str(v), other)) for v in set(col)}
        out[:, n_num + j] = np.fromiter(map(lut.__getitem__, col), dtype=np.uint8, count=n)
    return out


def to_float(value: object) -> float:
    """``float(value)``, or NaN when it is not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
