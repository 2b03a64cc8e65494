"""Bounded memory of a long replay: peak RSS must not grow with the stream's length.

Generates a benign+attack stream of N events (streamed to a .jsonl.gz file with bounded memory),
replays it into a fresh SQLite database with the default configuration, and samples the process's
resident set size after every batch. Reports RSS at checkpoints along the stream; a flat curve
after warm-up is the claim.

    .venv/bin/python benchmarks/replay_memory.py --events 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil

from pipeline.config import MonitorConfig
from pipeline.replay import replay_file
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.traffic import plan, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--scenario", default="mixed")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="infersentry-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    preds, labels = work / "p.jsonl.gz", work / "l.jsonl.gz"
    t0 = time.monotonic()
    n_pred, n_lab = write_jsonl(plan(args.scenario, n_events=args.events, seed=1), preds, labels)
    print(f"generated {n_pred:,} predictions + {n_lab:,} labels in {time.monotonic() - t0:.0f}s -> {work}")

    proc = psutil.Process()
    samples: list[tuple[int, float]] = []
    marks = sorted({int(args.events * f) for f in (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)})

    def on_batch(_progress: object, totals: object) -> None:
        events = totals.events  # type: ignore[attr-defined]
        samples.append((events, proc.memory_info().rss / 2**20))

    for leftover in work.glob("bench.db*"):  # always a fresh database: a finished run would be skipped
        leftover.unlink()
    store = Store(make_engine(f"sqlite:///{work}/bench.db"))
    t0 = time.monotonic()
    summary = replay_file(store, MonitorConfig(), preds, labels, run="memory", on_batch=on_batch)
    elapsed = time.monotonic() - t0
    print(f"replayed {summary.totals.events:,} events in {elapsed:.0f}s ({summary.totals.events / elapsed:,.0f} events/s)")
    print("events      RSS MiB   peak-so-far MiB")
    peak = 0.0
    j = 0
    for events, rss in samples:
        peak = max(peak, rss)
        while j < len(marks) and events >= marks[j]:
            print(f"{events:>9,}  {rss:8.0f}  {peak:8.0f}")
            j += 1
    early = max(r for e, r in samples if e <= marks[1])
    late = max(r for _, r in samples)
    print(f"peak RSS through 10% of the stream: {early:.0f} MiB; through 100%: {late:.0f} MiB "
          f"(growth {late - early:+.0f} MiB)")


if __name__ == "__main__":
    main()
