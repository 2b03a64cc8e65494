"""Drift on routes with few callers: false alarms, how much of the stream is tested, and detection delay.

The project's traffic generator with ``n_callers`` Zipf accounts (plus its two batch jobs and the
health-check canary), through the engine with the default drift detector:

- ``benign``: drift alarms over ``--events`` events, and the share of 1,000-event windows that held
  enough effective callers to be tested (``drift`` stats rows, one per tested close);
- ``drift-abrupt``: events from the change to the first drift alert (``-`` = not found), and whether
  the route said it was untestable (``drift.coverage`` notice).

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/drift_callers.py [--callers 15 25 40 60 100]
[--zipf 1.1 1.4] [--seeds 1 2 3] [--events 60000]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.events import RawMessage  # noqa: E402
from pipeline.timefmt import parse_ts  # noqa: E402
from pipeline.traffic import encode_message, generate  # noqa: E402
from pipeline.traffic.schedule import TrafficConfig  # noqa: E402


@dataclass
class Result:
    alarms: int  # drift alerts (all of them on a benign stream; before the change on a drifting one)
    notice: bool  # the route said its drift tests were inactive (``drift.coverage``)
    tested_closes: int  # closes with a tested window (``drift`` stats rows)
    delay: int | None = None  # prediction events from the change to the first drift alert after it


def replay(scenario: str, n_callers: int, zipf: float, seed: int, n_events: int) -> Result:
    traffic = generate(scenario, n_events=n_events, seed=seed,
                       config=TrafficConfig(n_callers=n_callers, zipf_exponent=zipf))
    msgs = [RawMessage("predictions", "p", 0, i, encode_message(m)) for i, m in enumerate(traffic.predictions)]
    engine = Engine(MonitorConfig(defaults=ModelConfig(detectors={"drift": DetectorSpec()})), "bench")
    raised: list[float] = []
    notice, tested = False, 0
    for i in range(0, len(msgs), 2000):
        res = engine.process(msgs[i:i + 2000])
        raised += [float(a["raised_ts"]) for a in res.alerts if a["kind"] == "drift"]
        notice |= any(a["kind"] == "data_quality" and "drift tests inactive" in a["explanation"] for a in res.alerts)
        tested += sum(1 for s in res.stats if s["stat"] == "drift")
    if not traffic.truth.change_points:
        return Result(len(raised), notice, tested)
    change = traffic.truth.change_points[0].ts
    first = min((t for t in raised if t >= change), default=None)
    delay = None if first is None else sum(1 for m in traffic.predictions if change <= _ts(m) <= first)
    return Result(sum(1 for t in raised if t < change), notice, tested, delay)


def _ts(message: dict[str, object]) -> float:
    value = message["ts"]
    return float(value) if isinstance(value, int | float) else parse_ts(str(value))[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--callers", type=int, nargs="+", default=[15, 25, 40, 60, 100])
    ap.add_argument("--zipf", type=float, nargs="+", default=[1.1, 1.4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--events", type=int, default=60_000)
    args = ap.parse_args()
    print("| callers | Zipf | benign alarms | benign closes tested | drift found | median delay | alarms before | "
          "coverage notice |")
    print("|---|---|---|---|---|---|---|---|")
    for c in args.callers:
        for z in args.zipf:
            benign = [replay("benign", c, z, s, args.events) for s in args.seeds]
            shifted = [replay("drift-abrupt", c, z, s, args.events // 3) for s in args.seeds]
            delays = [r.delay for r in shifted if r.delay is not None]
            print(f"| {c} | {z} | {sum(r.alarms for r in benign)} | {sum(r.tested_closes for r in benign):,} | "
                  f"{len(delays)}/{len(shifted)} | {median(delays) if delays else '-'} | "
                  f"{sum(r.alarms for r in shifted)} | {sum(r.notice for r in shifted)}/{len(shifted)} |", flush=True)


if __name__ == "__main__":
    main()
