"""Throughput of the default ``drift`` detector on a 64-feature, 5-class model (one core).

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/drift_speed.py [--events N] [--batch B]
[--repeat K] [--kw JSON]``

Reports CPU seconds (``time.process_time``, robust to a shared machine) and wall seconds for the
monitoring stage only (the one-off reference fit and calibration are reported separately). With
``--repeat K`` the run is repeated on a fresh detector and the best and median CPU rates are
printed (on a shared machine other jobs only ever slow a run down, so the best is the closest to
the detector's own cost; the median shows the spread). ``--kw '{"cov_dims": 0}'`` passes
constructor keywords.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.drift_traffic import make_stream, to_batches  # noqa: E402
from detectors.base import DetectorContext  # noqa: E402
from detectors.drift import DriftDetector  # noqa: E402
from pipeline.events import FeatureSchema, RouteKey  # noqa: E402

KW: dict = {}


def run(events: int, batch: int, d: int, kw: dict) -> tuple[float, float]:
    """One run on a fresh detector; prints its timings and returns the monitoring rates (CPU):
    overall, and after the reference stopped growing (the sustained rate)."""
    s = make_stream(events + 2000, d=d, seed=123)
    schema = FeatureSchema(numeric=tuple(f"f{i}" for i in range(d)), from_array=True)
    det = DriftDetector(DetectorContext(RouteKey("synthetic", "1", 0), schema, seed=0), **{**KW, **kw})
    batches = list(to_batches(s, batch))
    c0, w0 = time.process_time(), time.perf_counter()
    det.process(batches[0])
    det.process(batches[1])  # completes the 2,000-event reference: fit + calibration
    c1, w1 = time.process_time(), time.perf_counter()
    n = n_grow = 0
    c_grow = c1
    for b in batches[2:]:
        # a batch belongs to the growth phase if the reference was still growing or had blocks
        # waiting for its last refit (and recalibration) when the batch came
        growing = det.growth is not None and (det.growth.active or det.growth.pending_events > 0)
        det.process(b)
        n += len(b)
        if growing:
            n_grow, c_grow = n, time.process_time()
    c2, w2 = time.process_time(), time.perf_counter()
    print(f"reference fit + calibration: cpu {c1 - c0:.2f} s, wall {w1 - w0:.2f} s")
    print(
        f"monitoring {n} events, d={d}, batch={batch}: cpu {c2 - c1:.2f} s -> "
        f"{n / (c2 - c1):,.0f} events/s (cpu); wall {w2 - w1:.2f} s -> {n / (w2 - w1):,.0f} events/s"
    )
    steady = (n - n_grow) / max(c2 - c_grow, 1e-9)
    print(
        f"  of which while the reference grows: {n_grow} events, cpu {c_grow - c1:.2f} s (refits included); "
        f"after: {n - n_grow} events -> {steady:,.0f} events/s (cpu)"
    )
    return n / (c2 - c1), steady


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--kw", type=json.loads, default={})
    args = ap.parse_args()
    runs = [run(args.events, args.batch, args.d, args.kw) for _ in range(args.repeat)]
    if args.repeat > 1:
        for label, rates in (("overall", sorted(r[0] for r in runs)), ("sustained", sorted(r[1] for r in runs))):
            print(f"{args.repeat} runs, {label}: best {rates[-1]:,.0f} events/s (cpu), median {rates[len(rates) // 2]:,.0f}")


if __name__ == "__main__":
    main()
