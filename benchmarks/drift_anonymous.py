"""Drift false alarms on benign traffic when some or all callers send no ``client_id``.

The project's benign traffic (``pipeline.traffic``: heavy-tailed interactive users, batch jobs bursting
with their own class mix, retries, a canary) is replayed through :class:`pipeline.engine.Engine` with the
default configuration in three variants: every caller named (``named``), the batch jobs and the canary
anonymous (``batch``: internal senders without an id among named users), and nobody named (``all``).
Reports the ``drift`` / ``performance`` alerts raised (every one is a false alarm) per stream.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/drift_anonymous.py --seeds 1 2 3 4 5 6 7 41 42
    ... --kw '{"anonymous_share": null}'   # anonymous events each their own caller (before session 6)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig
from pipeline.engine import Engine
from pipeline.events import RawMessage
from pipeline.traffic import encode_message, generate

VARIANTS = ("named", "batch", "all")


def strip_ids(messages: list[dict[str, Any]], silent: set[str] | None) -> list[dict[str, Any]]:
    """The messages without ``client_id`` for the callers in ``silent`` (``None``: for everyone)."""
    return [
        {k: v for k, v in m.items() if not (k == "client_id" and (silent is None or v in silent))} for m in messages
    ]


def false_alarms(messages: list[dict[str, Any]], drift_params: dict[str, Any]) -> list[str]:
    """Summaries of the stream-level alerts the default engine raises (drift params overridden)."""
    detectors = dict(ModelConfig().detectors)
    detectors["drift"] = DetectorSpec(params=drift_params)
    eng = Engine(MonitorConfig(defaults=ModelConfig(detectors=detectors)), "bench")
    raw = [RawMessage("predictions", "p", 0, i, encode_message(m)) for i, m in enumerate(messages)]
    alerts = [a for k in range(0, len(raw), 2000) for a in eng.process(raw[k : k + 2000]).alerts]
    return [
        json.loads(str(a["explanation"]))["summary"] for a in alerts if a["kind"] in ("drift", "performance")
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[5, 41, 42])
    ap.add_argument("--datasets", nargs="+", default=["tabular", "digits"])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--kw", default="{}", help="JSON drift detector keywords")
    args = ap.parse_args()
    params = json.loads(args.kw)
    print("| dataset | seed | variant | anonymous share | false alarms | first |")
    print("|---|---|---|---|---|---|")
    total = {v: 0 for v in args.variants}
    for dataset in args.datasets:
        for seed in args.seeds:
            tr = generate("benign", args.events, seed=seed, dataset=dataset)
            silent = {*tr.truth.batch_job_ids, tr.truth.canary_id}
            for variant in args.variants:
                msgs = tr.predictions if variant == "named" else strip_ids(tr.predictions, silent if variant == "batch" else None)
                share = sum("client_id" not in m for m in msgs) / len(msgs)
                found = false_alarms(msgs, params)
                total[variant] += len(found)
                first = found[0][:80] if found else ""
                print(f"| {dataset} | {seed} | {variant} | {share:.2f} | {len(found)} | {first} |", flush=True)
    print("\ntotal false alarms: " + ", ".join(f"{v} {n}" for v, n in total.items()))


if __name__ == "__main__":
    main()
