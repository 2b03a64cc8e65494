"""Quality benchmark of ``drift`` + ``performance`` against a River-only baseline (ADWIN per feature).

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/drift_quality.py [--seeds 10 11 12] [--d 64] [--budget 1e7]``

Scenarios (change at event 4,000 of 7,000, i.e. soon after the first 2,000-event reference; with
``--change-at 24000`` the change comes after the reference has grown to its 20,000-event cap, as in
a long production run; caller-dependent traffic from ``drift_traffic``): one-feature mean shifts of KS 0.1 and 0.2, a scale change, a
10-feature shift, a gradual shift, a correlation-only shift, a prior/covariate shift that moves
the output distribution, concept drift with inline and delayed labels, and a 100k-event benign
run. Reported per scenario: detection rate, median delay (events after the change to the
trigger event), false alarms before the change; for the benign run, false alarms per 10k events.
Defaults were set on seeds 0-2; the report uses other seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from river.drift import ADWIN  # noqa: E402

from benchmarks.drift_traffic import World, make_stream, outcomes, to_batches  # noqa: E402
from detectors.base import DetectorContext  # noqa: E402
from detectors.drift import DriftDetector, PerformanceDetector  # noqa: E402
from pipeline.events import FeatureSchema, RouteKey  # noqa: E402

CHANGE, N = 4000, 7000


def feat_sd(world: World, j: int) -> float:
    return float(np.sqrt((world.loadings[:, j] ** 2).sum() + 1.0))


def scenarios(d: int, world: World) -> dict[str, dict]:  # type: ignore[type-arg]
    sd5, sd7 = feat_sd(world, 5), feat_sd(world, 7)
    ks01 = 0.2507 * sd5  # a normal mean shift of 0.2507 sd has KS distance 0.1

    def add(j: int, delta: float):  # type: ignore[no-untyped-def]
        def f(X, rng, frac):  # type: ignore[no-untyped-def]
            X = X.copy()
            X[:, j] += delta
            return X
        return f

    def scale(X, rng, frac):  # type: ignore[no-untyped-def]
        X = X.copy()
        X[:, 7] *= 1.5
        return X

    def multi(X, rng, frac):  # type: ignore[no-untyped-def]
        X = X.copy()
        X[:, 10:20] += 0.3 * np.array([feat_sd(world, j) for j in range(10, 20)])
        return X

    def gradual(X, rng, frac):  # type: ignore[no-untyped-def]
        X = X.copy()
        X[:, 5] += 0.6 * sd5 * frac
        return X

    def corr(X, rng, frac):  # type: ignore[no-untyped-def]
        F = rng.normal(size=(len(X), 4))
        L = world.loadings.copy()
        L[2, : d // 2] *= -1
        new = F @ L + rng.normal(size=X.shape)
        new[:, 1] = np.round(new[:, 1])
        new[:, 3] = np.round(2 * new[:, 3])
        return new

    def prior(X, rng, frac):  # type: ignore[no-untyped-def]
        return X + 0.5 * world.loadings[0]  # factor 0 moves: class mix and inputs change

    def swap(lab, rng):  # type: ignore[no-untyped-def]
        out = lab.copy()
        out[lab == 0], out[lab == 1] = 1, 0
        return out

    del sd7
    return {
        "mean shift KS 0.1 (1 feature)": {"change": add(5, ks01)},
        "mean shift KS 0.2 (1 feature)": {"change": add(5, 2.04 * ks01)},
        "scale x1.5 (1 feature)": {"change": scale},
        "10 features +0.3 sd": {"change": multi},
        "gradual 0 -> 0.6 sd over 1000 events": {"change": gradual},
        "correlation only": {"change": corr},
        "prior/covariate shift (outputs move)": {"change": prior},
        "concept drift, inline labels": {"label_change": swap, "delay": 0.0},
        "concept drift, labels delayed 10 min": {"label_change": swap, "delay": 600.0},
    }


def first_alarm(ids: list[str]) -> int | None:
    return int(ids[0].split("-e")[1]) if ids else None


KW: dict = {}  # detector keywords (defaults when empty); ``--kw '{"block_size": 50}'`` to explore
BUDGET = {"events_between_false_alarms": 1e7}  # ``--budget``: the false-alarm budget of both detectors


def run_drift(s, d: int, seed: int) -> list[int]:  # type: ignore[no-untyped-def]
    schema = FeatureSchema(tuple(f"f{i}" for i in range(d)), from_array=True)
    det = DriftDetector(DetectorContext(RouteKey("bench", "1"), schema, seed=seed, **BUDGET), **KW)
    return [
        int(f.trigger_event_id.split("-e")[1])
        for b in to_batches(s, 1000)
        for f in det.process(b).findings
        if not f.is_update
    ]


def run_perf(s, delay: float, seed: int) -> list[int]:  # type: ignore[no-untyped-def]
    det = PerformanceDetector(DetectorContext(RouteKey("bench", "1"), FeatureSchema(("a",)), seed=seed, **BUDGET))
    return [
        int(f.trigger_event_id.split("-e")[1])
        for b in outcomes(s, delay=delay, sizes=500)
        for f in det.process_outcomes(b).findings
        if not f.is_update
    ]


def run_adwin(s, start: int = 2000) -> list[int]:  # type: ignore[no-untyped-def]
    """River baseline: one ADWIN per feature (default delta), NaN skipped, first 2,000 as warm-up."""
    X = s.X
    dets = [ADWIN() for _ in range(X.shape[1])]
    alarms = []
    for i in range(len(X)):
        hit = False
        for j, a in enumerate(dets):
            v = X[i, j]
            if v == v:
                a.update(float(v))
                hit = hit or (i >= start and a.drift_detected)
        if hit:
            alarms.append(i)
    return alarms


def per_seed(rows: list[tuple[list[int], list[int]]]) -> str:
    """Our delay per seed (``-`` = not detected), e.g. ``199/849/-``."""
    after = [[a - CHANGE for a in r[0] if a >= CHANGE] for r in rows]
    return "/".join(str(a[0]) if a else "-" for a in after)


def summarize(name: str, rows: list[tuple[list[int], list[int]]]) -> str:
    out = [name]
    for k in (0, 1):
        det, delays, fa = 0, [], 0
        for r in rows:
            alarms = r[k]
            fa += sum(1 for a in alarms if a < CHANGE)
            after = [a for a in alarms if a >= CHANGE]
            if after:
                det += 1
                delays.append(after[0] - CHANGE)
        med = f"{int(np.median(delays))}" if delays else "-"
        out += [f"{det}/{len(rows)}", med, str(fa)]
    out.append(per_seed(rows))
    return "| " + " | ".join(out) + " |"


def main() -> None:
    global CHANGE, N
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--benign", type=int, default=100_000)
    ap.add_argument("--no-baseline", action="store_true", help="skip the (slow) ADWIN baseline")
    ap.add_argument("--only", nargs="*", default=None, help="run only scenarios whose name contains one of these")
    ap.add_argument("--kw", default="{}", help="JSON detector keywords (exploration only)")
    ap.add_argument("--budget", type=float, default=1e7, help="events between false alarms (default 1e7)")
    ap.add_argument("--change-at", type=int, default=CHANGE,
                    help="route position of the change (default 4000: a young reference; 24000: a mature one)")
    args = ap.parse_args()
    CHANGE, N = args.change_at, args.change_at + 3000
    KW.update(json.loads(args.kw))
    BUDGET["events_between_false_alarms"] = args.budget
    d = args.d
    print(f"d={d}, seeds={args.seeds}, budget {args.budget:g} events between false alarms, change at {CHANGE} of {N}; "
          "delay = events after the change")
    print("| scenario | ours detected | ours median delay | ours FA before | ADWIN detected | ADWIN median delay | ADWIN FA before | ours per seed |")
    print("|---|---|---|---|---|---|---|---|")
    names = list(scenarios(d, World(d, 0)))
    if args.only:
        names = [nm for nm in names if any(o in nm for o in args.only)]
    for name in names:
        rows = []
        for seed in args.seeds:
            world = World(d, seed)
            sc = scenarios(d, world)[name]
            s = make_stream(N, d=d, seed=seed, world_seed=seed, change_at=CHANGE,
                            change=sc.get("change"), label_change=sc.get("label_change"))
            ours = run_perf(s, sc["delay"], seed) if "label_change" in sc else run_drift(s, d, seed)
            rows.append((ours, [] if args.no_baseline else run_adwin(s)))
        print(summarize(name, rows), flush=True)
    s = make_stream(args.benign + 2000, d=d, seed=args.seeds[0] + 1000, world_seed=args.seeds[0])
    ours = run_drift(s, d, args.seeds[0])
    perf = run_perf(s, 0.0, args.seeds[0])
    base = [] if args.no_baseline else run_adwin(s)
    per10k = 1e4 / args.benign
    print(f"\nbenign run, {args.benign} monitored events with bursts/batch clients/retries/canary/rate cycle:")
    print(f"  drift false alarms: {len(ours)} ({len(ours) * per10k:.2f} per 10k); performance: {len(perf)}; "
          f"ADWIN-per-feature: {len(base)} ({len(base) * per10k:.2f} per 10k)")


if __name__ == "__main__":
    main()
