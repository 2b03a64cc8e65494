"""Production-like prediction-log traffic for the stress benchmark (deterministic given a seed).

What a model server sees: Zipf-distributed callers plus many light ones and anonymous events, a diurnal
rate cycle, batch jobs with their own class mix, client retries (same features, new ``event_id``),
duplicate deliveries (same ``event_id``), a health-check canary every 30 s, a 5% canary rollout of a new
``model_version``, late labels, a few malformed messages and slightly out-of-order timestamps (the file is
written in arrival order, ``ts`` is event time). Drifts and attacker queries are injected on top.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stress.models import ModelSpec, build_models

T0 = 1_795_000_000.0  # 2026-11-18T..Z: event time of the first event


@dataclass(frozen=True)
class Profile:
    """A benign traffic profile."""

    name: str
    models: dict[str, float]  # model -> share of organic traffic
    n_events: int = 40_000  # organic events (batch jobs, canary, retries come on top)
    span_hours: float = 24.0
    n_callers: int = 300
    zipf_s: float = 1.1
    anon_share: float = 0.05
    diurnal_amp: float = 0.6
    batch_jobs: int = 6
    batch_size: tuple[int, int] = (200, 600)
    retry_rate: float = 0.02
    dup_rate: float = 0.003
    canary_every_s: float = 30.0
    rollout_share: float = 0.05
    rollout_start: float = 0.5  # fraction of the span
    label_share: float = 0.3
    inline_label_share: float = 0.02
    label_delay_median_s: float = 3600.0
    malformed: int = 6
    disorder_s: float = 2.0
    regions: int = 0  # >0: callers in time zones 24/regions h apart, each with its own class mix and site offset
    region_offset_sd: float = 0.2
    region_prior: float = 0.08
    rescore_entities: int = 0  # >0: a caller re-scores a fixed portfolio every rescore_every_s, values updated
    rescore_every_s: float = 7200.0


@dataclass(frozen=True)
class Drift:
    """A change in the organic traffic of one model from ``start`` (fraction of the span) on."""

    kind: str  # shift | scale | prior | concept | const0 | missing | units
    model: str
    feature: str | None = None
    param: float = 0.0
    start: float = 0.5
    rows: float = 1.0  # share of rows affected (upstream bugs)


@dataclass(frozen=True)
class Injection:
    """Queries one caller sends in natural units, from ``start`` with a mean gap of ``gap_s`` seconds."""

    caller: str
    model: str
    queries: np.ndarray
    start: float
    gap_s: float
    kind: str


@dataclass
class Stream:
    """Generated messages in arrival order, label messages sorted by ts, and the ground truth."""

    lines: list[bytes]
    labels: list[bytes]
    truth: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        ev, lb = directory / "events.jsonl", directory / "labels.jsonl"
        ev.write_bytes(b"".join(line + b"\n" for line in self.lines))
        lb.write_bytes(b"".join(line + b"\n" for line in self.labels))
        (directory / "truth.json").write_text(json.dumps(self.truth, indent=1, sort_keys=True))
        return ev, lb


def _rfc3339(ts: float) -> str:
    import datetime as dt

    d = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _times(rng: np.random.Generator, n: int, span: float, amp: float) -> np.ndarray:
    """``n`` event times of a Poisson process with a diurnal rate (peak mid-afternoon), by rejection."""
    out: list[np.ndarray] = []
    got = 0
    while got < n:
        t = rng.uniform(0, span, 2 * n)
        rate = 1 + amp * np.sin(2 * np.pi * (t / 86400.0) - 1.0)
        keep = t[rng.uniform(0, 1 + amp, len(t)) < rate]
        out.append(keep)
        got += len(keep)
    return np.sort(np.concatenate(out)[:n])


def _shift_for_ks(x: np.ndarray, ks: float) -> float:
    """Additive shift of ``x`` whose two-sample KS statistic against ``x`` is ``ks`` (bisection)."""
    xs = np.sort(x)

    def ks_of(d: float) -> float:
        grid = np.concatenate([xs, xs + d])
        a = np.searchsorted(xs, grid, side="right") / len(xs)
        b = np.searchsorted(xs + d, grid, side="right") / len(xs)
        return float(np.max(np.abs(a - b)))

    lo, hi = 0.0, float(xs[-1] - xs[0])
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ks_of(mid) < ks else (lo, mid)
    return (lo + hi) / 2


class _Builder:
    """Accumulates events (as dicts with hidden ordering keys) for one stream."""

    def __init__(self, seed: int, models: dict[str, ModelSpec]) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.models = models
        self.rows: list[dict[str, Any]] = []
        self.n = 0

    def add(self, model: str, version: str, ts: np.ndarray, X: np.ndarray, y: np.ndarray | None,
            callers: Sequence[str | None], source: str) -> list[dict[str, Any]]:
        spec = self.models[model]
        proba = spec.predict_proba(X, version) if len(X) else np.zeros((0, len(spec.classes)))
        out = []
        for i in range(len(ts)):
            self.n += 1
            feats = {f: (None if np.isnan(v) else float(v)) for f, v in zip(spec.features, X[i], strict=True)}
            p = proba[i]
            ev: dict[str, Any] = {
                "event_id": f"s{self.seed}-{self.n:07d}", "ts": round(float(ts[i]), 3), "model": model,
                "model_version": version, "features": feats,
                "prediction": spec.classes[int(np.argmax(p))],
                "probabilities": {c: round(float(q), 4) for c, q in zip(spec.classes, p, strict=True)},
                "latency_ms": round(float(self.rng.lognormal(1.5, 0.4)), 2),
            }
            if callers[i] is not None:
                ev["client_id"] = callers[i]
            row = {"ev": ev, "y": None if y is None else spec.classes[int(y[i])], "src": source}
            out.append(row)
        self.rows.extend(out)
        return out


def _zipf_callers(rng: np.random.Generator, n: int, k: int, s: float, anon: float) -> list[str | None]:
    w = 1.0 / np.arange(1, k + 1) ** s
    idx = rng.choice(k, size=n, p=w / w.sum())
    ids = [f"acct-{i + 1:03d}" for i in range(k)]
    is_anon = rng.uniform(size=n) < anon
    return [None if a else ids[i] for i, a in zip(idx, is_anon, strict=True)]


def _organic(spec: ModelSpec, rng: np.random.Generator, region: np.ndarray, p: Profile) -> tuple[
        np.ndarray, np.ndarray]:
    """Organic rows; with regions, each region has its own class mix and a site offset on two features."""
    if p.regions <= 0:
        return spec.sample(rng, len(region))
    k = len(spec.classes)
    X = np.empty((len(region), spec.X.shape[1]))
    y = np.empty(len(region), dtype=int)
    base = np.bincount(spec.y, minlength=k) / len(spec.y)
    for r in range(p.regions):
        idx = np.flatnonzero(region == r)
        probs = base.copy()
        d = p.region_prior * (r - (p.regions - 1) / 2)
        probs[1] = min(max(probs[1] + d, 0.02), 0.98)
        probs[0] = max(1 - probs[1:].sum(), 0.02)
        probs /= probs.sum()
        Xr, y[idx] = spec.sample(rng, len(idx), probs)
        cols = [(2 * r) % X.shape[1], (2 * r + 1) % X.shape[1]]
        Xr[:, cols] += p.region_offset_sd * (r - (p.regions - 1) / 2) * spec.std[cols]
        X[idx] = spec.finish(Xr)
    return X, y


def _apply_drift(d: Drift, spec: ModelSpec, rng: np.random.Generator, X: np.ndarray,
                 truth: dict[str, Any]) -> np.ndarray:
    X = X.copy()
    if d.feature is None:
        return X
    j = spec.features.index(d.feature)
    hit = rng.uniform(size=len(X)) < d.rows
    if d.kind == "shift":
        delta = _shift_for_ks(spec.X[:, j], d.param)
        truth["shift_natural_units"] = delta
        X[:, j] += delta
    elif d.kind == "scale":
        med = np.median(spec.X[:, j])
        X[:, j] = med + (X[:, j] - med) * d.param
    elif d.kind == "const0":
        X[hit, j] = 0.0
    elif d.kind == "missing":
        X[hit, j] = np.nan
    elif d.kind == "units":
        X[hit, j] *= d.param
    keep_nan = np.isnan(X)
    X = spec.finish(np.nan_to_num(X))
    X[keep_nan] = np.nan
    return X


def generate(profile: Profile, seed: int, drift: Drift | None = None,
             injections: Sequence[Injection] = (), skew_s: float = 0.0) -> Stream:
    """One stream: organic traffic of ``profile`` plus an optional drift and attacker queries."""
    models = build_models()
    b = _Builder(seed, models)
    rng = b.rng
    span = profile.span_hours * 3600.0
    truth: dict[str, Any] = {"profile": asdict(profile), "seed": seed, "drift": None, "attackers": {}}

    # Organic traffic.
    t = T0 + _times(rng, profile.n_events, span, profile.diurnal_amp)
    names = list(profile.models)
    share = np.array([profile.models[m] for m in names])
    which = rng.choice(len(names), size=len(t), p=share / share.sum())
    callers = _zipf_callers(rng, len(t), profile.n_callers, profile.zipf_s, profile.anon_share)
    region = np.zeros(len(t), dtype=int)
    if profile.regions > 0:
        # Each region's activity peaks at its own local afternoon; its callers are its own accounts.
        phase = 2 * np.pi * np.arange(profile.regions) / profile.regions
        w = 1 + profile.diurnal_amp * np.sin(2 * np.pi * t[:, None] / 86400.0 - 1.0 - phase[None, :])
        cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
        region = (rng.uniform(size=len(t))[:, None] > cum).sum(axis=1)
        callers = [None if c is None else f"r{r}-{c}" for c, r in zip(callers, region, strict=True)]
    rollout_at = T0 + profile.rollout_start * span
    v2 = (t >= rollout_at) & (rng.uniform(size=len(t)) < profile.rollout_share)
    for mi, m in enumerate(names):
        spec = models[m]
        for version in ("1", "2"):
            sel = np.flatnonzero((which == mi) & (v2 == (version == "2")))
            if not len(sel):
                continue
            probs = None
            X, y = _organic(spec, rng, region[sel], profile)
            if drift is not None and drift.model == m:
                after = t[sel] >= T0 + drift.start * span
                if drift.kind == "prior":
                    base = np.bincount(spec.y, minlength=len(spec.classes)) / len(spec.y)
                    probs = base.copy()
                    probs[1] += drift.param
                    probs[0] -= drift.param
                    X2, y2 = spec.sample(rng, int(after.sum()), probs)
                    X[after], y[after] = X2, y2
                elif drift.kind != "concept":
                    X[after] = _apply_drift(drift, spec, rng, X[after], truth.setdefault("drift_detail", {}))
            rows = b.add(m, version, t[sel], X, y, [callers[i] for i in sel], "organic")
            if drift is not None and drift.model == m and drift.kind == "concept":
                # The world changes, not the inputs: within a region of feature space the truth flips.
                j = spec.features.index(drift.feature or spec.features[0])
                cut = float(np.quantile(spec.X[:, j], 1 - drift.param))
                for r, x in zip(rows, X, strict=True):
                    if r["ev"]["ts"] >= T0 + drift.start * span and x[j] >= cut:
                        r["y"] = spec.classes[1 - spec.classes.index(r["y"])]

    # Portfolio re-scoring: the same entities again and again, with slightly updated values.
    if profile.rescore_entities > 0:
        spec = models[names[0]]
        E, Ey = spec.sample(rng, profile.rescore_entities)
        for r0 in np.arange(0.0, span, profile.rescore_every_s):
            cont = ~spec.integer
            Xr = E.copy()
            Xr[:, cont] *= 1 + rng.normal(0, 0.01, (len(E), int(cont.sum())))
            ts = T0 + r0 + 600 + np.cumsum(rng.exponential(0.2, len(E)))
            b.add(names[0], "1", ts, spec.finish(Xr), Ey, ["portfolio-rescore"] * len(E), "rescore")

    # Batch jobs: a few accounts send hundreds of rows in a burst, with their own class mix.
    for k in range(profile.batch_jobs):
        m = names[k % len(names)]
        spec = models[m]
        size = int(rng.integers(*profile.batch_size))
        mix = rng.dirichlet(np.full(len(spec.classes), 0.7))
        X, y = spec.sample(rng, size, mix)
        start = T0 + rng.uniform(0.05, 0.95) * span
        ts = start + np.cumsum(rng.exponential(1 / 40.0, size))
        b.add(m, "1", ts, X, y, [f"batch-etl-{k % 3 + 1}"] * size, "batch")

    # Health-check canary: one fixed input every 30 s on the first model.
    if profile.canary_every_s > 0:
        spec = models[names[0]]
        ts = T0 + np.arange(0, span, profile.canary_every_s) + 0.25
        x0 = spec.X[int(np.argmin(np.abs(spec.X - spec.mean).sum(axis=1)))]
        b.add(names[0], "1", ts, np.tile(x0, (len(ts), 1)), None, ["healthcheck"] * len(ts), "canary")

    # Attackers and thieves.
    for inj in injections:
        n = len(inj.queries)
        ts = T0 + inj.start * span + np.cumsum(rng.exponential(inj.gap_s, n))
        rows = b.add(inj.model, "1", ts, inj.queries, None, [inj.caller] * n, inj.kind)
        truth["attackers"][inj.caller] = {
            "kind": inj.kind, "model": inj.model, "queries": n, "first_ts": float(ts[0]),
            "last_ts": float(ts[-1]), "event_ids": [r["ev"]["event_id"] for r in rows]}

    # Client retries: exact repeats of features under a new event_id, a moment later.
    organic = [r for r in b.rows if r["src"] in ("organic", "batch") and "client_id" in r["ev"]]
    n_retry = int(profile.retry_rate * len(organic))
    retries = []
    for i in rng.choice(len(organic), size=n_retry, replace=False):
        b.n += 1
        ev = dict(organic[i]["ev"])
        ev["event_id"] = f"s{seed}-{b.n:07d}"
        ev["ts"] = round(ev["ts"] + float(rng.exponential(2.0)) + 0.2, 3)
        retries.append({"ev": ev, "y": organic[i]["y"], "src": "retry"})
    b.rows.extend(retries)

    # Event time -> arrival order: network jitter; duplicates delivered again later.
    arrival = np.array([r["ev"]["ts"] for r in b.rows]) + np.abs(rng.normal(0, profile.disorder_s, len(b.rows)))
    order = list(np.argsort(arrival, kind="stable"))
    rows = [b.rows[i] for i in order]
    arr = [float(arrival[i]) for i in order]
    n_dup = int(profile.dup_rate * len(rows))
    dup_idx = sorted(rng.choice(len(rows), size=n_dup, replace=False).tolist())
    dups = [(arr[i] + float(rng.uniform(1, 60)), rows[i]) for i in dup_idx]

    # Labels: a share arrives late on the labels topic; a few inline.
    label_msgs: list[tuple[float, bytes]] = []
    n_labelled = 0
    for r in rows:
        if r["y"] is None or r["src"] == "retry":
            continue
        u = rng.uniform()
        if u < profile.inline_label_share:
            r["ev"]["label"] = r["y"]
            n_labelled += 1
        elif u < profile.label_share:
            lt = r["ev"]["ts"] + float(rng.lognormal(np.log(profile.label_delay_median_s), 1.0))
            msg = {"event_id": r["ev"]["event_id"], "ts": round(lt, 3), "label": r["y"], "model": r["ev"]["model"]}
            label_msgs.append((lt, json.dumps(msg, separators=(",", ":")).encode()))
            n_labelled += 1
    label_msgs.sort(key=lambda x: x[0])

    lines = [(a, json.dumps({**r["ev"], "ts": _rfc3339(r["ev"]["ts"])}, separators=(",", ":")).encode())
             for a, r in zip(arr, rows, strict=True)]
    lines += [(a, json.dumps({**r["ev"], "ts": _rfc3339(r["ev"]["ts"])}, separators=(",", ":")).encode())
              for a, r in dups]
    slots = sorted(rng.integers(len(arr), size=profile.malformed).tolist())
    bad = _malformed(rng, [rows[i] for i in slots], skew_s)
    lines += [(arr[i] + 0.001, m) for i, m in zip(slots, bad, strict=True)]
    lines.sort(key=lambda x: x[0])

    truth.update({
        "events_valid_unique": len(rows), "duplicates": n_dup, "malformed": len(bad),
        "retries": n_retry, "labelled": n_labelled, "t0": T0, "span_s": span,
        "lines": len(lines), "models": {m: sum(1 for r in rows if r["ev"]["model"] == m) for m in names},
        "disorder_max_s": float(np.max(arrival - np.array([r["ev"]["ts"] for r in b.rows]))),
    })
    if drift is not None:
        truth["drift"] = {**asdict(drift), "change_ts": T0 + drift.start * span}
    stream = Stream([x[1] for x in lines], [x[1] for x in label_msgs], truth)
    stream.truth["order"] = None
    # For scoring: each valid event's model, version, caller and source, in arrival order.
    stream.truth["events"] = [[r["ev"]["event_id"], r["ev"]["model"], r["ev"]["model_version"],
                               r["ev"].get("client_id"), r["src"], r["ev"]["ts"]] for r in rows]
    return stream


def _malformed(rng: np.random.Generator, rows: list[dict[str, Any]], skew_s: float) -> list[bytes]:
    """Messages a buggy producer sends: NaN, a missing field, bad probabilities, a truncated line.

    Each copies the event delivered just before it; ``skew_s`` moves their ``ts`` (a producer's bad clock).
    """
    out: list[bytes] = []
    for k, row in enumerate(rows):
        ev = dict(row["ev"])
        ev["event_id"] = f"bad-{k}"
        ev["ts"] = _rfc3339(ev["ts"] + skew_s)
        kind = k % 5
        if kind == 0:
            text = json.dumps(ev, separators=(",", ":"))
            f = next(iter(ev["features"]))
            out.append(text.replace(f'"{f}":', f'"{f}":NaN,"_x":', 1).encode())
            continue
        if kind == 1:
            ev.pop("prediction")
        elif kind == 2:
            ev["probabilities"] = {c: 0.4 for c in ev["probabilities"]} | {"extra": 0.4}
        elif kind == 3:
            ev["features"] = {}
        else:
            out.append(json.dumps(ev, separators=(",", ":")).encode()[:57])
            continue
        out.append(json.dumps(ev, separators=(",", ":")).encode())
    return out


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 UTC string as written by this generator."""
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
