"""Calibration: at a small budget the measured false-alarm rate matches the budget.

Streams are caller-dependent (bursts of batch clients with their own class mix, retries, a
canary); each seed has its own world, reference and calibration. The confidence interval is
taken over independent runs (each run is one reference), not over events.
"""

from __future__ import annotations

import numpy as np

from benchmarks.drift_traffic import make_stream, to_batches
from detectors.base import DetectorContext
from detectors.drift import DriftDetector
from pipeline.events import FeatureSchema, RouteKey

BUDGET = 3000.0
N = 22_000
SCHEMA = FeatureSchema(tuple(f"f{i}" for i in range(4)), from_array=True)


def test_false_alarm_rate_matches_small_budget() -> None:
    per_run = []
    for seed in range(8):
        s = make_stream(N, d=4, seed=100 + seed, world_seed=seed)
        ctx = DetectorContext(RouteKey("m", "1"), SCHEMA, seed=seed, events_between_false_alarms=BUDGET)
        det = DriftDetector(ctx, calibration_events=20_000, quiet_windows=1)
        alarms = sum(
            1 for b in to_batches(s, 2000) for f in det.process(b).findings if not f.is_update
        )
        assert det.calibration["method"] == "empirical"
        per_run.append(alarms * BUDGET / (N - 2000))
    r = np.array(per_run)
    mean, se = r.mean(), r.std(ddof=1) / np.sqrt(len(r))
    # measured rate / budget rate: 1 must lie in the 99% interval over runs
    assert mean - 2.6 * se <= 1.0 <= mean + 2.6 * se, (mean, se, per_run)
