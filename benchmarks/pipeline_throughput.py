"""Throughput of the pipeline's stages on generated production-like traffic.

Stages, each measured on the same in-memory messages (tabular model, 18 features, ``mixed`` scenario):
decode only; the engine with no detectors (decode, dedup, routing, label join, columnar batches, rows);
the engine with the default detectors; and a full replay (engine + idempotent writes + checkpoints) into
SQLite and, if ``--pg URL`` is given, PostgreSQL.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_throughput.py --events 200000 [--pg URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig
from pipeline.decode import DecodeError, decode_prediction
from pipeline.engine import Engine
from pipeline.events import RawMessage
from pipeline.replay import replay_file
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.traffic import encode_message, iter_events, plan, write_jsonl


def messages(n: int, scenario: str) -> list[RawMessage]:
    out: list[RawMessage] = []
    offsets = {"prediction": 0, "label": 0}
    for stream, msg in iter_events(scenario, n_events=n, seed=3):
        out.append(RawMessage("predictions" if stream == "prediction" else "labels", stream, 0, offsets[stream],
                              encode_message(msg)))
        offsets[stream] += 1
    return out


def timed(label: str, n_events: int, fn: object) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{label:<44} {n_events / wall:>10,.0f} events/s wall {n_events / cpu:>10,.0f} events/s CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--scenario", default="mixed")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--pg", default=None, help="PostgreSQL URL of an empty database for the replay stage")
    args = ap.parse_args()
    msgs = messages(args.events, args.scenario)
    n = args.events
    preds = [m for m in msgs if m.stream == "predictions"]

    def decode_only() -> None:
        for m in preds:
            try:
                decode_prediction(m.value)
            except DecodeError:
                pass

    def engine_with(cfg: MonitorConfig) -> None:
        eng = Engine(cfg, "bench")
        for i in range(0, len(msgs), args.batch_size):
            eng.process(msgs[i : i + args.batch_size])

    bare = MonitorConfig(batch_size=args.batch_size, defaults=ModelConfig(detectors={"drift": DetectorSpec(enabled=False),
        "performance": DetectorSpec(enabled=False), "outlier": DetectorSpec(enabled=False),
        "campaign": DetectorSpec(enabled=False), "extraction": DetectorSpec(enabled=False)}))
    default = MonitorConfig(batch_size=args.batch_size)
    Engine(default, "warm-up")  # imports
    print(f"{n:,} predictions + {len(msgs) - n:,} labels, batches of {args.batch_size:,}")
    timed("decode only", n, decode_only)
    timed("engine, no detectors", n, lambda: engine_with(bare))
    timed("engine, default detectors", n, lambda: engine_with(default))

    work = Path(tempfile.mkdtemp(prefix="infersentry-tp-"))
    p, lab = work / "p.jsonl.gz", work / "l.jsonl.gz"
    write_jsonl(plan(args.scenario, n_events=n, seed=3), p, lab)
    timed("replay to SQLite (default detectors)", n,
          lambda: replay_file(Store(make_engine(f"sqlite:///{work}/tp.db")), default, p, lab))
    if args.pg:  # a run name of its own, so an earlier benchmark's finished run is not mistaken for this one
        timed("replay to PostgreSQL (default detectors)", n,
              lambda: replay_file(Store(make_engine(args.pg)), default, p, lab, run=f"throughput-{work.name}"))


if __name__ == "__main__":
    main()
