"""Robust per-feature scaling: median and floored IQR scale, and clipped standardisation."""

from __future__ import annotations

import warnings

import numpy as np


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and a floored robust scale (IQR/1.349, at least half the std).

    Constant features get a small floor (1e-3 of the median feature scale) so that any movement
    off a value that never varied in the reference stands out, without dividing by zero.
    """
    X = np.asarray(X, dtype=np.float64)
    with warnings.catch_warnings():  # an all-missing feature gets NaN here, replaced just below
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmedian(X, axis=0)
        q75, q25 = np.nanpercentile(X, [75, 25], axis=0)
        scale = np.maximum((q75 - q25) / 1.349, 0.5 * np.nanstd(X, axis=0))
    center = np.where(np.isfinite(center), center, 0.0)
    scale = np.where(np.isfinite(scale), scale, 0.0)
    pos = scale[scale > 0]
    floor = 1e-3 * (float(np.median(pos)) if pos.size else 1.0)
    return center, np.maximum(scale, max(floor, 1e-12))


def standardise(X: np.ndarray, center: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    """``(X - center) / scale`` with NaN (missing) mapped to 0 and values clipped to +-clip."""
    Z = (X - center) / scale
    np.clip(Z, -clip, clip, out=Z)  # +-inf to +-clip (as nan_to_num would, for less work)
    np.copyto(Z, 0.0, where=np.isnan(Z))
    return Z
