"""Stream-level detection through the whole pipeline, on the project's production-like traffic.

Replays ``pipeline.traffic`` scenarios (heavy-tailed callers, batch jobs with their own class mix, retries,
a canary, delayed labels) through :class:`pipeline.engine.Engine` with the default configuration and reports,
per scenario: the first ``drift``/``performance`` alert's delay in events after the change, and false alarms
(stream-level alerts before the change, or at all in ``benign``).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/drift_pipeline.py --seeds 41 42 --events 20000
"""

from __future__ import annotations

import argparse
import bisect
import statistics

from pipeline.config import MonitorConfig
from pipeline.engine import Engine
from pipeline.events import RawMessage
from pipeline.traffic import encode_message, iter_events, plan

SCENARIOS = ("benign", "drift-abrupt", "drift-gradual", "drift-scale", "drift-correlation", "prior-shift",
             "concept-drift")
STREAM_KINDS = ("drift", "performance")


def run(scenario: str, dataset: str, seed: int, n: int) -> tuple[list[float], float | None, list[float]]:
    truth = plan(scenario, n_events=n, seed=seed, dataset=dataset).truth
    eng = Engine(MonitorConfig(), "bench")
    msgs, ts = [], []
    offsets = {"prediction": 0, "label": 0}
    for stream, msg in iter_events(scenario, n_events=n, seed=seed, dataset=dataset):
        msgs.append(RawMessage("predictions" if stream == "prediction" else "labels", stream, 0, offsets[stream],
                               encode_message(msg)))
        offsets[stream] += 1
        if stream == "prediction":
            ts.append(float(msg["ts"]))  # type: ignore[arg-type]
    raised: list[float] = []
    for i in range(0, len(msgs), 2000):
        raised += [a["raised_ts"] for a in eng.process(msgs[i : i + 2000]).alerts if a["kind"] in STREAM_KINDS]
    ts.sort()
    change = truth.change_points[0].ts if truth.change_points else None
    return sorted(raised), change, ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[41, 42])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--datasets", nargs="+", default=["tabular", "digits"])
    args = ap.parse_args()
    print("| dataset | scenario | detected | median delay (events) | false alarms before the change |")
    print("|---|---|---|---|---|")
    for dataset in args.datasets:
        for scenario in SCENARIOS:
            delays, false_alarms, detected = [], 0, 0
            for seed in args.seeds:
                raised, change, ts = run(scenario, dataset, seed, args.events)
                if change is None:
                    false_alarms += len(raised)
                    continue
                before = [r for r in raised if r < change]
                false_alarms += len(before)
                after = [r for r in raised if r >= change]
                if after:
                    detected += 1
                    delays.append(bisect.bisect_right(ts, after[0]) - bisect.bisect_left(ts, change))
            runs = len(args.seeds)
            det = "-" if scenario == "benign" else f"{detected}/{runs}"
            med = f"{statistics.median(delays):.0f}" if delays else "-"
            print(f"| {dataset} | {scenario} | {det} | {med} | {false_alarms} |", flush=True)


if __name__ == "__main__":
    main()
