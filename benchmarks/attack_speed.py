"""Throughput of the attack detectors (outlier + campaign + extraction) in the detector stage.

Benign synthetic traffic (correlated Gaussian features, 5,000 callers with Zipf-like activity,
probabilities from a softmax of a random linear model) is cut into micro-batches beforehand;
only ``process`` calls are timed, in CPU seconds of this process (``time.process_time``; BLAS
threads are pinned to 1 so that this is one core), which stays meaningful on a shared machine.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/attack_speed.py

Memory: ``--memory --callers 1000000 --events 2000000`` streams a million distinct callers (two
queries each) through all three detectors and reports peak RSS (``resource.getrusage``) and the
detectors' caller-table bytes.

Same results: ``--golden FILE`` writes a digest of every finding, flagged event and final state on four
fixed streams; run it on two commits and compare the files (``cmp``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from detectors.attack import CampaignDetector, ExtractionDetector, OutlierDetector  # noqa: E402
from detectors.base import DetectorContext  # noqa: E402
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays  # noqa: E402


def make_batches(d: int, n_events: int, n_callers: int, batch_size: int, seed: int,
                 churn: bool = False) -> list:
    return list(iter_batches(d, n_events, n_callers, batch_size, seed, churn))


def iter_batches(d: int, n_events: int, n_callers: int, batch_size: int, seed: int,
                 churn: bool = False):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(max(2, d // 4), d))
    beta = rng.normal(size=(d, 5)) / np.sqrt(d)
    for start in range(0, n_events, batch_size):
        n = min(batch_size, n_events - start)
        X = rng.normal(size=(n, W.shape[0])) @ W + 0.3 * rng.normal(size=(n, d))
        logits = X @ beta
        P = np.exp(logits - logits.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        if churn:  # every caller new: callers 0..n_callers-1 in turn
            ids = (np.arange(start, start + n) % n_callers)
        else:
            ids = np.minimum(rng.zipf(1.3, size=n), n_callers) - 1
        clients = [f"c{i}" for i in ids.tolist()]
        yield batch_from_arrays(
            X, ts=start + np.arange(n) * 1e-3, client_ids=clients, probabilities=P, start_index=start,
        )


def run(d: int, n_events: int, n_callers: int, batch_size: int, churn: bool = False) -> dict:
    ctx = DetectorContext(RouteKey("bench", "1"), FeatureSchema(tuple(f"f{i}" for i in range(d))),
                          seed=0)
    dets = [OutlierDetector(ctx), CampaignDetector(ctx), ExtractionDetector(ctx)]
    batches = make_batches(d, n_events, n_callers, batch_size, seed=d, churn=churn)
    warm = 2  # the reference period (2,000 events) is not timed
    n_warm = sum(len(b) for b in batches[:warm])
    for b in batches[:warm]:
        for det in dets:
            det.process(b)
    per = dict.fromkeys((det.name for det in dets), 0.0)
    t0 = time.process_time()
    for b in batches[warm:]:
        for det in dets:
            t = time.process_time()
            det.process(b)
            per[det.name] += time.process_time() - t
    total = time.process_time() - t0
    n = n_events - n_warm
    return {
        "d": d, "events": n, "batch": batch_size, "events_per_s": n / total,
        "per_detector_events_per_s": {k: n / v for k, v in per.items()},
        "table_mb": {det.name: det.table.nbytes() / 2**20 for det in dets if hasattr(det, "table")},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def memory(n_callers: int, n_events: int, d: int = 16, batch_size: int = 2000) -> None:
    """Stream ``n_events`` with ``n_callers`` distinct callers (each new caller in turn) through all
    three detectors; batches are generated lazily so that the RSS is the detectors' own."""
    ctx = DetectorContext(RouteKey("bench", "1"), FeatureSchema(tuple(f"f{i}" for i in range(d))))
    dets = [OutlierDetector(ctx), CampaignDetector(ctx), ExtractionDetector(ctx)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.process_time()
    n = 0
    for b in iter_batches(d, n_events, n_callers, batch_size, seed=1, churn=True):
        for det in dets:
            det.process(b)
        n += len(b)
    cpu = time.process_time() - t0
    live = {det.name: len(det.table.index) for det in dets if hasattr(det, "table")}
    tables = {det.name: round(det.table.nbytes() / 2**20, 1) for det in dets if hasattr(det, "table")}
    print(f"memory: {n:,} events, {n_callers:,} distinct callers (live: {live}); caller tables {tables} MiB; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"(before: {rss0:.0f} MiB); {n / cpu:,.0f} events/s CPU")


def golden(path: str) -> None:
    """Write a digest of everything the three detectors return (findings with explanations, flagged
    events, and a hash of the final state's bytes) on four fixed streams: the quality benchmark's
    digits and tabular traffic (no ART queries; seed 5) and this file's 16/64-feature traffic with
    NaNs and a uniform-noise thief. Two commits that should give the same results must write
    identical files (speed changes are checked this way; ``PYTHONHASHSEED`` is irrelevant)."""
    import hashlib
    import json

    import attack_traffic as T

    lines: list[str] = []

    def digest(st: object, h: Any) -> None:
        if isinstance(st, np.ndarray):
            h.update(f"{st.dtype}{st.shape}".encode())
            h.update(repr(st.tolist()).encode() if st.dtype == object else np.ascontiguousarray(st).tobytes())
        elif isinstance(st, dict):
            for k in sorted(st, key=str):
                h.update(str(k).encode())
                digest(st[k], h)
        elif isinstance(st, list | tuple):
            for x in st:
                digest(x, h)
        else:
            h.update(repr(st).encode())

    def run(X: np.ndarray, ts: np.ndarray, clients: list[str], tag: str, bs: int) -> None:
        ctx = DetectorContext(RouteKey("g", "1"), FeatureSchema(tuple(f"f{i}" for i in range(X.shape[1]))), seed=3)
        dets = [OutlierDetector(ctx), CampaignDetector(ctx), ExtractionDetector(ctx)]
        for a in range(0, len(X), bs):
            b = batch_from_arrays(X[a:a + bs], ts=ts[a:a + bs], client_ids=clients[a:a + bs], start_index=a)
            for det in dets:
                o = det.process(b)
                lines.extend(f"{tag} F {det.name} {f.trigger_event_id} {f.client_id} {f.score!r} {f.window_start!r} "
                             f"{','.join(f.event_ids)} {json.dumps(f.explanation, sort_keys=True, default=str)}"
                             for f in o.findings)
                lines.extend(f"{tag} G {det.name} {f.event_id} {f.score!r} {f.reason}" for f in o.flagged)
        for det in dets:
            h = hashlib.sha256()
            digest(det.state_dict()["state"], h)
            lines.append(f"{tag} S {det.name} {h.hexdigest()}")

    for name, mk in (("digits", T.make_digits), ("tabular", T.make_tabular)):
        s = T.build_stream(mk(5), seed=5, with_art=False)
        o = np.argsort(s.ts, kind="stable")
        run(s.X[o], s.ts[o], [s.clients[i] for i in o], name, 500)
    for d in (16, 64):
        bs = make_batches(d, 20000, 500, 1000, seed=d)
        X = np.vstack([b.X for b in bs])
        ts = np.concatenate([b.ts for b in bs])
        cl = [c for b in bs for c in b.client_ids]
        X[::97, 3] = np.nan
        X[5000:5100] = np.random.default_rng(1).uniform(-9, 9, size=(100, d))
        cl[5000:5100] = ["thief"] * 100
        run(X, ts, cl, f"bench{d}", 700)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"golden: {len(lines)} lines ({sum(ln.split()[1] == 'F' for ln in lines)} findings) -> {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--callers", type=int, default=5_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--dims", type=int, nargs="*", default=[16, 64])
    ap.add_argument("--churn", action="store_true", help="every event from a caller in rotation")
    ap.add_argument("--memory", action="store_true", help="peak RSS with --callers distinct callers")
    ap.add_argument("--golden", metavar="FILE", help="write a digest of all detector outputs (no timing)")
    a = ap.parse_args()
    if a.golden:
        golden(a.golden)
        return
    if a.memory:
        memory(a.callers, a.events)
        return
    for d in a.dims:
        r = run(d, a.events, a.callers, a.batch, churn=a.churn)
        per = ", ".join(f"{k} {v:,.0f}/s" for k, v in r["per_detector_events_per_s"].items())
        print(f"d={d:3d} batch={a.batch} events={r['events']:,}: all three {r['events_per_s']:,.0f} events/s "
              f"({per}); caller tables {r['table_mb']} MiB; peak RSS {r['peak_rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
