"""Calibration of ``drift`` at small false-alarm budgets, where false alarms are frequent enough to count.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/drift_calibration.py [--budgets 1000 3000 10000 30000]
[--seeds 10 ... 19] [--events 50000] [--d 16]``

Every run is a benign caller-dependent stream from ``drift_traffic`` (Zipf-like interactive users with
personal offsets, batch clients bursting with their own class mix, retries, a health-check canary, a
daily rate cycle) with its own world, reference and calibration, scored by ``DriftDetector`` with the
default configuration and the given budget (events between false alarms). An alarm is a new
finding (an episode), as in production. For each budget the table gives the alarms counted over
all runs, the measured events per alarm, its ratio to the budget, and a 95% interval of the
ratio over runs (each run is one reference and one calibration, so runs are the independent unit,
not events). Calibrated means the interval contains 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.drift_traffic import make_stream, to_batches  # noqa: E402
from detectors.base import DetectorContext  # noqa: E402
from detectors.drift import DriftDetector  # noqa: E402
from pipeline.events import FeatureSchema, RouteKey  # noqa: E402

REFERENCE = 2000  # the detector's default reference size: events before monitoring starts


def alarms_per_run(budget: float, seeds: list[int], n: int, d: int, kw: dict | None = None) -> tuple[list[int], list[str]]:
    """New findings of each run and the calibration method each threshold came from."""
    schema = FeatureSchema(tuple(f"f{i}" for i in range(d)), from_array=True)
    counts, methods = [], []
    for seed in seeds:
        s = make_stream(n + REFERENCE, d=d, seed=seed + 500, world_seed=seed)
        det = DriftDetector(DetectorContext(RouteKey("cal", "1"), schema, seed=seed, events_between_false_alarms=budget),
                            **(kw or {}))
        counts.append(sum(1 for b in to_batches(s, 1000) for f in det.process(b).findings if not f.is_update))
        methods.append(str(det.calibration["method"]))
    return counts, methods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=float, nargs="+", default=[1000, 3000, 10000, 30000])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10, 20)))
    ap.add_argument("--events", type=int, default=50_000, help="monitored events per run")
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--kw", default="{}", help="JSON detector keywords (exploration only)")
    args = ap.parse_args()
    kw = json.loads(args.kw)
    n, runs = args.events, len(args.seeds)
    print(f"d={args.d}, {runs} runs x {n:,} monitored events, configuration: {kw or 'default'}")
    print("| budget | threshold from | alarms | expected | events per alarm | ratio to budget | 95% interval over runs |")
    print("|---|---|---|---|---|---|---|")
    for budget in args.budgets:
        counts, methods = alarms_per_run(budget, args.seeds, n, args.d, kw)
        rate = np.array(counts) * budget / n  # per run: measured alarm rate / budget rate
        mean, se = rate.mean(), rate.std(ddof=1) / np.sqrt(runs)
        total = sum(counts)
        per_alarm = f"{runs * n / total:,.0f}" if total else "-"
        method = "/".join(sorted(set(methods)))
        print(f"| {budget:,.0f} | {method} | {total} | {runs * n / budget:.1f} | {per_alarm} | "
              f"{mean:.2f} | {max(mean - 2.262 * se, 0):.2f}-{mean + 2.262 * se:.2f} |", flush=True)


if __name__ == "__main__":
    main()
