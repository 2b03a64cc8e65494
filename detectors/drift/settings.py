"""The ``drift`` detector's hyper-parameters: validated once, with the sizes derived from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detectors.base import DetectorContext


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """Validated hyper-parameters (see :class:`~detectors.drift.input_output.DriftDetector`) and
    derived sizes: ``block_cap`` (kept events per caller and block), ``cov_step`` (covariance
    super-block), ``hist_len`` (caller history kept between chunks), ``n_bins_total`` and
    ``missing_bin`` (bins per channel, the last one for missing values), ``budget``."""

    reference_size: int
    block_size: int
    window_sizes: tuple[int, ...]
    n_bins: int
    bin_span: float
    n_components: int
    max_categories: int
    min_category_freq: float
    caller_cap: float
    block_cap: int
    min_effective_callers: float
    min_caller_correlation: float
    quiet_windows: int
    calibration_events: int
    top_k: int
    cov_dims: int
    cov_caller_blocks: int
    cov_clip_quantile: float
    cov_min_events: float
    cov_step: int
    hist_len: int
    anonymous_run: int
    anonymous_share: float | None
    spread_score: str
    max_class_channels: int
    temporal_block: int
    max_reference_size: int
    budget: float
    n_bins_total: int
    missing_bin: int


def drift_settings(
    context: DetectorContext,
    *,
    reference_size: int,
    block_size: int,
    window_sizes: Sequence[int],
    n_bins: int,
    bin_span: float,
    n_components: int,
    max_categories: int,
    min_category_freq: float,
    caller_cap: float,
    min_effective_callers: float,
    min_caller_correlation: float,
    quiet_windows: int,
    calibration_events: int,
    top_k: int,
    cov_dims: int,
    cov_caller_blocks: int,
    cov_min_events: float,
    anonymous_run: int,
    anonymous_share: float | None,
    spread_score: str,
    max_class_channels: int,
    temporal_block: int | None,
    max_reference_size: int,
) -> DriftSettings:
    """Check every hyper-parameter (a clear ``ValueError`` for the first bad one) and derive the sizes."""
    window_sizes = tuple(int(w) for w in window_sizes)
    if int(reference_size) < 200:
        raise ValueError(f"reference_size must be >= 200, got {reference_size}")
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not window_sizes or any(w <= 0 or w % block_size for w in window_sizes):
        raise ValueError(
            f"window_sizes must be positive multiples of block_size={block_size}, got {window_sizes}"
        )
    if not 4 <= int(n_bins) <= 128:
        raise ValueError(f"n_bins must be in [4, 128], got {n_bins}")
    if not 0.0 <= float(bin_span) <= 4.0:
        raise ValueError(f"bin_span must be in [0, 4], got {bin_span}")
    if int(n_components) < 0:
        raise ValueError(f"n_components must be >= 0, got {n_components}")
    if not 1 <= int(max_categories) <= 100:
        raise ValueError(f"max_categories must be in [1, 100], got {max_categories}")
    if not 0.0 <= float(min_category_freq) < 0.5:
        raise ValueError(f"min_category_freq must be in [0, 0.5), got {min_category_freq}")
    if not 0.0 < float(caller_cap) <= 1.0:
        raise ValueError(f"caller_cap must be in (0, 1], got {caller_cap}")
    if float(min_effective_callers) < 1.0:
        raise ValueError(f"min_effective_callers must be >= 1, got {min_effective_callers}")
    if not 0.0 <= float(min_caller_correlation) < 1.0:
        raise ValueError(f"min_caller_correlation must be in [0, 1), got {min_caller_correlation}")
    if int(quiet_windows) < 1:
        raise ValueError(f"quiet_windows must be >= 1, got {quiet_windows}")
    if int(calibration_events) < 10 * max(window_sizes):
        raise ValueError(f"calibration_events must be >= 10 * max(window_sizes), got {calibration_events}")
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not 0 <= int(cov_dims) <= 128:
        raise ValueError(f"cov_dims must be in [0, 128], got {cov_dims}")
    if not 1 <= int(cov_caller_blocks) or (int(cov_caller_blocks) - 1) * int(block_size) > max(window_sizes):
        raise ValueError(
            f"cov_caller_blocks must be >= 1 with (cov_caller_blocks - 1) * block_size <= max(window_sizes), "
            f"got {cov_caller_blocks}"
        )
    if float(cov_min_events) < 0.0:
        raise ValueError(f"cov_min_events must be >= 0, got {cov_min_events}")
    if int(anonymous_run) < 1:
        raise ValueError(f"anonymous_run must be >= 1, got {anonymous_run}")
    if anonymous_share is not None and not 0.0 <= float(anonymous_share) <= 1.0:
        raise ValueError(f"anonymous_share must be None or in [0, 1], got {anonymous_share}")
    if spread_score not in ("normal", "rank"):
        raise ValueError(f"spread_score must be 'normal' or 'rank', got {spread_score!r}")
    if int(max_class_channels) < 0:
        raise ValueError(f"max_class_channels must be >= 0, got {max_class_channels}")
    if temporal_block is not None and (int(temporal_block) < 0 or int(temporal_block) % int(block_size)):
        raise ValueError(f"temporal_block must be None, 0 or a positive multiple of block_size, got {temporal_block}")
    if int(max_reference_size) < 0:
        raise ValueError(f"max_reference_size must be >= 0, got {max_reference_size}")
    if context.events_between_false_alarms <= 0:
        raise ValueError("context.events_between_false_alarms must be > 0")

    block_size = int(block_size)
    windows = tuple(sorted(window_sizes))
    cov_step = int(cov_caller_blocks) * block_size
    n_bins_total = max(int(n_bins), int(max_categories) + 1) + 1
    return DriftSettings(
        reference_size=int(reference_size),
        block_size=block_size,
        window_sizes=windows,
        n_bins=int(n_bins),
        bin_span=float(bin_span),
        n_components=int(n_components),
        max_categories=int(max_categories),
        min_category_freq=float(min_category_freq),
        caller_cap=float(caller_cap),
        block_cap=max(1, int(round(float(caller_cap) * block_size))),
        min_effective_callers=float(min_effective_callers),
        min_caller_correlation=float(min_caller_correlation),
        quiet_windows=int(quiet_windows),
        calibration_events=int(calibration_events),
        top_k=int(top_k),
        cov_dims=int(cov_dims),
        cov_caller_blocks=int(cov_caller_blocks),
        cov_clip_quantile=0.9,
        cov_min_events=float(cov_min_events),
        cov_step=cov_step,
        # caller history kept between chunks: the largest window plus enough to know, for every
        # event a window can reach, whether its caller already appeared in its covariance super-block
        hist_len=max(windows) + cov_step - block_size,
        anonymous_run=int(anonymous_run),
        anonymous_share=None if anonymous_share is None else float(anonymous_share),
        spread_score=str(spread_score),
        max_class_channels=int(max_class_channels),
        temporal_block=max(windows) if temporal_block is None else int(temporal_block),
        max_reference_size=int(max_reference_size),
        budget=float(context.events_between_false_alarms),
        n_bins_total=n_bins_total,
        missing_bin=n_bins_total - 1,
    )
