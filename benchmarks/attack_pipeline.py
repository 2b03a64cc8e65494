"""The attack detectors in the real pipeline: generated production-like traffic through the engine.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/attack_pipeline.py --seeds 31 32 33
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/attack_pipeline.py --seeds 1 2   # tuning

For every scenario (``benign``, ``mixed``, ``campaigns``), dataset (``tabular``, ``digits``) and seed, the
project's traffic generator (:mod:`pipeline.traffic`: heavy-tailed benign callers, batch jobs with their
own class mix, retries, a canary, drifts, attackers) writes a stream that is encoded to wire format
and replayed through :class:`pipeline.engine.Engine` with the default :class:`MonitorConfig` (batches of
``batch_size``, labels merged by time as in ``infersentry replay``). Reported from the alerts and the
generator's ground truth:

* per-event (``outlier`` detector, kinds ``adversarial``/``outlier``): the benign event FPR, before a
  drift and after it (split into the events before and after the detector's reference refresh),
  with a 95% Clopper-Pearson interval, and the severity mix;
* per caller: attackers caught (``attack_campaign``/``extraction``), attack queries each had sent up
  to and including its first alert's trigger, and benign callers alerted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy.stats import beta  # noqa: E402

from pipeline.config import MonitorConfig  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.events import RawMessage  # noqa: E402
from pipeline.traffic import encode_message, plan  # noqa: E402

PER_EVENT = ("adversarial", "outlier")
PER_CALLER = ("attack_campaign", "extraction")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = float(beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def replay(scenario: str, dataset: str, seed: int, n_events: int,
           config: MonitorConfig | None = None) -> tuple[Any, list[dict[str, Any]], float]:
    """Run the stream through the engine; returns (plan, alert rows incl. updates, CPU seconds)."""
    config = config or MonitorConfig()
    p = plan(scenario, n_events=n_events, seed=seed, dataset=dataset)
    msgs = []
    off = {"prediction": 0, "label": 0}
    for stream, m in p.iter_events():
        name = "predictions" if stream == "prediction" else "labels"
        msgs.append(RawMessage(name, f"file:{name}", 0, off[stream], encode_message(m)))
        off[stream] += 1
    eng = Engine(config, run=f"bench-{scenario}-{dataset}-{seed}")
    alerts: list[dict[str, Any]] = []
    t0 = time.process_time()
    for a in range(0, len(msgs), config.batch_size):
        res = eng.process(msgs[a:a + config.batch_size])
        alerts.extend(res.alerts)
    return p, alerts, time.process_time() - t0


def evaluate(scenario: str, dataset: str, seed: int, n_events: int) -> dict[str, Any]:
    p, alerts, cpu = replay(scenario, dataset, seed, n_events)
    truth = p.truth
    prefix = f"{p.model_name}-{seed}-"
    attack_idx: dict[str, set[int]] = {a.client_id: set(a.indices) for a in truth.attackers}
    all_attack = set().union(*attack_idx.values()) if attack_idx else set()
    n = truth.n_events
    drift_at = truth.change_points[0].index if truth.change_points else n
    ev: dict[str, Any] = {"scenario": scenario, "dataset": dataset, "seed": seed, "cpu": cpu, "n": n}
    # per event
    out = [a for a in alerts if a["kind"] in PER_EVENT]
    idx = np.array([int(a["trigger_event_id"][len(prefix):]) for a in out], dtype=np.int64)
    benign_mask = np.ones(n, dtype=bool)
    benign_mask[list(all_attack)] = False
    flagged = np.zeros(n, dtype=bool)
    flagged[idx] = True
    sev = {int(i): a["severity"] for i, a in zip(idx.tolist(), out, strict=True)}
    refresh = [(json.loads(a["explanation"]).get("reference_refreshed") or {}).get("at_event") for a in out]
    ref_n = MonitorConfig().defaults.detectors["outlier"].params.get("reference_events", 2000)
    # events the detector scored: after its first reference (approximately the first ref_n*1.5 events)
    first_scored = int(min(idx)) if idx.size else ref_n
    first_scored = min(first_scored, ref_n)
    seg: dict[str, tuple[int, int]] = {"before drift": (first_scored, drift_at)}
    if truth.change_points:
        seg["after drift"] = (drift_at, n)
    for name, (a0, a1) in seg.items():
        m = benign_mask.copy()
        m[:a0] = False
        m[a1:] = False
        nb = int(m.sum())
        fp_idx = np.flatnonzero(flagged & m)
        k_warn = sum(1 for i in fp_idx.tolist() if sev[i] != "info")
        ev[f"fp:{name}"] = (int(fp_idx.size), k_warn, nb)
    ev["refresh"] = sorted({int(r[len(prefix):]) for r in refresh if r is not None})
    ev["attack_events_flagged"] = int((flagged & ~benign_mask).sum())
    ev["per_event_alerts"] = len(out)
    ev["per_event_non_info"] = sum(1 for a in out if a["severity"] != "info")
    # per caller
    first: dict[str, dict[str, int]] = defaultdict(dict)
    for a in alerts:
        if a["kind"] in PER_CALLER:
            i = int(a["trigger_event_id"][len(prefix):])
            prev = first[a["client_id"]].get(a["detector"])
            if prev is None or i < prev:
                first[a["client_id"]][a["detector"]] = i
    ev["attackers"] = {}
    for at in truth.attackers:
        hits = first.get(at.client_id, {})
        t = min(hits.values()) if hits else None
        ev["attackers"][at.client_id] = {
            "kind": at.kind, "queries": at.n_queries, "detected_by": sorted(hits),
            "delay": None if t is None else sum(1 for i in at.indices if i <= t),
        }
    ev["benign_flagged"] = sorted(c for c in first if c not in attack_idx)
    ev["n_benign_callers"] = len(truth.benign_client_ids) + len(truth.batch_job_ids) + 1
    ev["top_features"] = Counter(
        json.loads(a["explanation"])["top_features"][0]["feature"]
        for a in out if int(a["trigger_event_id"][len(prefix):]) not in all_attack
        and json.loads(a["explanation"]).get("top_features")
    ).most_common(4)
    ev["fp_callers"] = Counter(
        a["client_id"] for a in out if int(a["trigger_event_id"][len(prefix):]) not in all_attack
    ).most_common(3)
    return ev


def fmt_rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{100 * k / max(n, 1):.3f}% ({k}/{n}; 95% CI {100 * lo:.3f}-{100 * hi:.3f}%)"


def report(results: list[dict[str, Any]]) -> None:
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for ev in results:
        by[(ev["scenario"], ev["dataset"])].append(ev)
    print("\n| scenario | dataset | benign FPR before drift | after drift: all / warning+critical | "
          "reference refreshes | attack events flagged |")
    print("|---|---|---|---|---|---|")
    for (sc, ds), evs in by.items():
        k0 = sum(e["fp:before drift"][0] for e in evs)
        n0 = sum(e["fp:before drift"][2] for e in evs)
        if "fp:after drift" in evs[0]:
            k1 = sum(e["fp:after drift"][0] for e in evs)
            w1 = sum(e["fp:after drift"][1] for e in evs)
            n1 = sum(e["fp:after drift"][2] for e in evs)
            after = f"{fmt_rate(k1, n1)} / {fmt_rate(w1, n1)}"
        else:
            after = "-"
        refr = [e["refresh"] for e in evs]
        print(f"| {sc} | {ds} | {fmt_rate(k0, n0)} | {after} | {refr} | "
              f"{sum(e['attack_events_flagged'] for e in evs)} |")
    print("\n| scenario | dataset | attacker kind | caught | queries to first alert | detectors |")
    print("|---|---|---|---|---|---|")
    delays_all = []
    for (sc, ds), evs in by.items():
        kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in evs:
            for a in e["attackers"].values():
                kinds[a["kind"]].append(a)
        for k, lst in kinds.items():
            d = [a["delay"] for a in lst if a["delay"] is not None]
            delays_all += d
            dets = Counter(x for a in lst for x in a["detected_by"])
            print(f"| {sc} | {ds} | {k} | {len(d)}/{len(lst)} | {d} | {dict(dets)} |")
    print(f"\nmedian queries to first alert over all attackers: {np.median(delays_all) if delays_all else '-'}")
    nbf = sum(len(e["benign_flagged"]) for e in results)
    nbc = sum(e["n_benign_callers"] for e in results)
    print(f"benign callers alerted (campaign/extraction): {nbf} of {nbc} "
          f"{[(e['scenario'], e['dataset'], e['seed'], e['benign_flagged']) for e in results if e['benign_flagged']]}")
    cpu = sum(e["cpu"] for e in results)
    print(f"engine CPU {cpu:.1f} s for {sum(e['n'] for e in results):,} events")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[31, 32, 33])
    ap.add_argument("--scenarios", nargs="+", default=["benign", "mixed", "campaigns"])
    ap.add_argument("--datasets", nargs="+", default=["tabular", "digits"])
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    results = []
    for sc in a.scenarios:
        for ds in a.datasets:
            for seed in a.seeds:
                t = time.time()
                ev = evaluate(sc, ds, seed, a.events)
                results.append(ev)
                msg = (f"[{sc}/{ds}/{seed}: {time.time() - t:.0f} s; fp {ev.get('fp:before drift')} "
                       f"{ev.get('fp:after drift', '')} refresh {ev['refresh']}; "
                       f"{ {k: v['delay'] for k, v in ev['attackers'].items()} }; benign flagged "
                       f"{ev['benign_flagged']}]")
                if a.verbose:
                    msg += f" top {ev['top_features']} callers {ev['fp_callers']}"
                print(msg, file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
