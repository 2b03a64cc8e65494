"""Quality of the attack detectors on ART attack traffic, with two baselines side by side.

    .venv/bin/python benchmarks/attack_quality.py --seeds 21 22        # held-out (reported)
    .venv/bin/python benchmarks/attack_quality.py --seeds 11 12        # tuning seeds

For each dataset (digits in [0, 1]; tabular in natural units) and seed, a stream is built by
:mod:`attack_traffic` and fed to ``outlier``, ``campaign`` and ``extraction`` (default
configuration, micro-batches of 500). Reported:

* per-event (white-box FGSM/PGD at each strength): recall, precision (against all benign events
  flagged in the same stream) and the benign event FPR, for ``outlier`` and for a River
  HalfSpaceTrees baseline (features min-max scaled on the reference, threshold at the same
  event budget on held-out reference scores);
* per caller: every campaign and extraction caller, whether it was alerted (``campaign`` or
  ``extraction``), the number of attack queries it had sent up to and including the alert's
  trigger event, and the benign callers alerted; the same for a request-rate baseline (alert
  when a caller sends more than ``rate_limit`` queries in 60 s, the limit set to twice the
  highest per-minute count of any caller during the reference period).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict, deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attack_traffic as T  # noqa: E402
import numpy as np  # noqa: E402

from detectors.attack import CampaignDetector, ExtractionDetector, OutlierDetector  # noqa: E402
from detectors.attack.subspace import tail_threshold  # noqa: E402
from detectors.base import DetectorContext  # noqa: E402
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays  # noqa: E402

REF = 2000


def run_detectors(ds: T.Dataset, s: T.Stream, batch: int = 500, seed: int = 0) -> dict:
    ctx = DetectorContext(RouteKey(ds.name, "1"), FeatureSchema(tuple(f"f{i}" for i in range(ds.d))),
                          seed=seed)
    dets = [OutlierDetector(ctx), CampaignDetector(ctx), ExtractionDetector(ctx)]
    P = ds.proba(s.X)
    findings = []
    cpu = 0.0
    for a in range(0, len(s.X), batch):
        b = slice(a, a + batch)
        eb = batch_from_arrays(s.X[b], ts=s.ts[b], client_ids=s.clients[b], probabilities=P[b], start_index=a)
        t = time.process_time()
        for det in dets:
            findings.extend(det.process(eb).findings)
        cpu += time.process_time() - t
    return {"findings": findings, "cpu": cpu}


def hst_baseline(ds: T.Dataset, s: T.Stream, fpr: float, seed: int) -> np.ndarray:
    from river.anomaly import HalfSpaceTrees

    lo, hi = s.X[:REF].min(axis=0), s.X[:REF].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    U = np.clip((s.X - lo) / span, 0.0, 1.0)
    names = [f"f{i}" for i in range(ds.d)]
    hst = HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=seed)
    for i in range(REF // 2):
        hst.learn_one(dict(zip(names, U[i].tolist(), strict=True)))
    cal = []
    for i in range(REF // 2, REF):
        x = dict(zip(names, U[i].tolist(), strict=True))
        cal.append(hst.score_one(x))
        hst.learn_one(x)
    thr = tail_threshold(np.array(cal), fpr)
    flags = np.zeros(len(U), dtype=bool)
    for i in range(REF, len(U)):
        x = dict(zip(names, U[i].tolist(), strict=True))
        flags[i] = hst.score_one(x) > thr
        hst.learn_one(x)
    return flags


def rate_baseline(s: T.Stream, window: float = 60.0) -> dict[str, int]:
    """Caller -> index (in stream) of the event where its 60 s count exceeded the limit."""
    recent: dict[str, deque] = defaultdict(deque)
    peak = 0
    for i in range(REF):
        q = recent[s.clients[i]]
        q.append(s.ts[i])
        while q and q[0] <= s.ts[i] - window:
            q.popleft()
        peak = max(peak, len(q))
    limit = 2 * peak
    alerts: dict[str, int] = {}
    for i in range(REF, len(s.X)):
        c = s.clients[i]
        q = recent[c]
        q.append(s.ts[i])
        while q and q[0] <= s.ts[i] - window:
            q.popleft()
        if len(q) > limit and c not in alerts:
            alerts[c] = i
    return alerts


def evaluate(ds: T.Dataset, s: T.Stream, seed: int, fpr: float = 1e-3) -> dict:
    res = run_detectors(ds, s, seed=seed)
    n = len(s.X)
    idx_of = {f"e{i}": i for i in range(n)}
    role = np.array(s.role)
    benign = role == "benign"
    scored = np.arange(n) >= REF
    out_flag = np.zeros(n, dtype=bool)
    kinds = defaultdict(int)
    caller_alert: dict[str, dict[str, int]] = defaultdict(dict)
    for f in res["findings"]:
        if f.detector == "outlier":
            i = idx_of[f.trigger_event_id]
            out_flag[i] = True
            kinds[(s.role[i], f.kind.value)] += 1
        elif not f.is_update:
            i = idx_of[f.trigger_event_id]
            prev = caller_alert[f.client_id].get(f.detector)
            if prev is None or i < prev:
                caller_alert[f.client_id][f.detector] = i
    hst_flag = hst_baseline(ds, s, fpr, seed)
    rate = rate_baseline(s)
    ev: dict = {"per_event": {}, "per_caller": {}, "benign_flagged": {}, "cpu": res["cpu"], "n": n}
    nb = int((benign & scored).sum())
    for name, flags in (("outlier", out_flag), ("hst", hst_flag)):
        fp = int((flags & benign & scored).sum())
        ev["per_event"][(name, "benign")] = {"fpr": fp / nb, "fp": fp, "n": nb}
        for tag in sorted({r for r in s.role if r.startswith("whitebox:")}):
            m = (role == tag) & scored
            tp = int((flags & m).sum())
            ev["per_event"][(name, tag)] = {"recall": tp / max(m.sum(), 1), "tp": tp, "n": int(m.sum()),
                                            "precision": tp / max(tp + fp, 1)}
    ev["adv_kind"] = dict(kinds)
    # per caller
    clients = np.array(s.clients)
    for c, r in s.callers.items():
        if r == "benign":
            hits = {k: v for k, v in caller_alert.get(c, {}).items()}
            ev["benign_flagged"][c] = {"ours": sorted(hits), "rate": c in rate}
            continue
        if r.startswith("whitebox:"):
            continue
        rows = np.flatnonzero(clients == c)
        atk_rows = rows[s.is_attack_query[rows]]
        hits = caller_alert.get(c, {})
        first = min(hits.values()) if hits else None
        delay = int((atk_rows <= first).sum()) if first is not None else None
        rd = rate.get(c)
        ev["per_caller"][c] = {
            "role": r, "queries": int(len(atk_rows)), "detected_by": sorted(hits),
            "delay": delay,
            "campaign_delay": int((atk_rows <= hits["campaign"]).sum()) if "campaign" in hits else None,
            "extraction_delay": int((atk_rows <= hits["extraction"]).sum()) if "extraction" in hits else None,
            "rate_delay": int((atk_rows <= rd).sum()) if rd is not None else None,
        }
    return ev


def report(results: list[tuple[str, int, dict]]) -> None:
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for name, _, ev in results:
        by_ds[name].append(ev)
    for name, evs in by_ds.items():
        print(f"\n### {name} (seeds: {len(evs)})\n")
        print("| per-event | outlier recall | outlier precision | HST recall | HST precision |")
        print("|---|---|---|---|---|")
        tags = sorted({k[1] for ev in evs for k in ev["per_event"] if k[1] != "benign"})
        for tag in tags:
            row = []
            for det in ("outlier", "hst"):
                tp = sum(ev["per_event"][(det, tag)]["tp"] for ev in evs)
                nn = sum(ev["per_event"][(det, tag)]["n"] for ev in evs)
                fp = sum(ev["per_event"][(det, "benign")]["fp"] for ev in evs)
                row += [f"{tp / nn:.3f} ({tp}/{nn})", f"{tp / max(tp + fp, 1):.3f}"]
            print(f"| {tag[9:]} | " + " | ".join(row) + " |")
        for det in ("outlier", "hst"):
            fp = sum(ev["per_event"][(det, "benign")]["fp"] for ev in evs)
            nb = sum(ev["per_event"][(det, "benign")]["n"] for ev in evs)
            print(f"\n{det}: benign event FPR {fp / nb:.4f} ({fp}/{nb})", end="")
        kinds: dict = defaultdict(int)
        for ev in evs:
            for k, v in ev["adv_kind"].items():
                kinds[k] += v
        adv = {k: v for k, v in kinds.items() if k[0].startswith("whitebox")}
        n_adv = sum(v for k, v in adv.items() if k[1] == "adversarial")
        print(f"\noutlier kind on flagged white-box events: adversarial {n_adv}, outlier "
              f"{sum(adv.values()) - n_adv}")
        print("\n| caller role | detected (ours) | median queries to alert (ours) | campaign / extraction "
              "detector hits | rate baseline detected | rate median queries |")
        print("|---|---|---|---|---|---|")
        roles = sorted({pc["role"] for ev in evs for pc in ev["per_caller"].values()})
        all_delays = []
        for r in roles:
            pcs = [pc for ev in evs for pc in ev["per_caller"].values() if pc["role"] == r]
            det = [pc for pc in pcs if pc["delay"] is not None]
            delays = [pc["delay"] for pc in det]
            all_delays += delays
            camp = sum("campaign" in pc["detected_by"] for pc in pcs)
            ext = sum("extraction" in pc["detected_by"] for pc in pcs)
            rd = [pc["rate_delay"] for pc in pcs if pc["rate_delay"] is not None]
            med = f"{np.median(delays):.0f} {sorted(delays)}" if delays else "-"
            print(f"| {r} | {len(det)}/{len(pcs)} | {med} | {camp} / {ext} | {len(rd)}/{len(pcs)} | "
                  f"{np.median(rd) if rd else '-'} |")
        print(f"\nall campaigns: median queries to first alert {np.median(all_delays) if all_delays else '-'}")
        bf = [(c, v["ours"]) for ev in evs for c, v in ev["benign_flagged"].items() if v["ours"]]
        br = [c for ev in evs for c, v in ev["benign_flagged"].items() if v["rate"]]
        nbc = sum(len(ev["benign_flagged"]) for ev in evs)
        print(f"benign callers alerted (ours): {len(bf)}/{nbc} {bf}")
        print(f"benign callers alerted (rate baseline): {len(br)}/{nbc} {sorted(set(br))}")
        cpu = sum(ev["cpu"] for ev in evs)
        print(f"detector CPU time {cpu:.1f} s for {sum(ev['n'] for ev in evs)} events")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    ap.add_argument("--datasets", nargs="+", default=["digits", "tabular"])
    a = ap.parse_args()
    results = []
    for name in a.datasets:
        for seed in a.seeds:
            ds = T.make_digits(seed) if name == "digits" else T.make_tabular(seed)
            t = time.time()
            s = T.build_stream(ds, seed)
            ev = evaluate(ds, s, seed)
            print(f"[{name} seed {seed}: {len(s.X)} events, {time.time() - t:.0f} s]", file=sys.stderr)
            results.append((name, seed, ev))
    report(results)


if __name__ == "__main__":
    main()
