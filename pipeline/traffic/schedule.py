"""The stream's skeleton: who sends what kind of event when, before any payload exists.

The skeleton is a handful of compact arrays (about 30 bytes per event): arrival time, event
kind, actor and an auxiliary integer (attack query number, or the position of the event a retry
or redelivery repeats). Payloads are generated later, chunk by chunk (see ``generator``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# event kinds
CALLER, BATCH, CANARY, RETRY, ATTACK, REDELIVERY = range(6)

_SEGMENT_S = 600.0
_SLICE_S = 60.0


@dataclass(frozen=True)
class TrafficConfig:
    """Knobs of the benign background traffic (defaults are the demo's)."""

    n_callers: int = 200
    #: caller volume follows a Zipf law with this exponent (rank 1 is the busiest caller)
    zipf_exponent: float = 1.1
    #: mean benign caller requests per second, before the diurnal cycle and per-minute noise
    rate: float = 8.0
    diurnal_amplitude: float = 0.3
    diurnal_peak_hour_utc: float = 14.0
    #: sd of the per-minute log-normal rate noise
    rate_jitter: float = 0.2
    #: Dirichlet concentration of each caller's class mix around the global prior
    caller_mix_concentration: float = 30.0
    n_batch_jobs: int = 2
    batch_interval_s: float = 900.0
    batch_size: tuple[int, int] = (100, 400)
    #: requests per second while a batch job runs
    batch_throughput: tuple[float, float] = (40.0, 150.0)
    batch_mix_concentration: float = 3.0
    retry_fraction: float = 0.03
    #: retries come 0.2 s plus an exponential delay with this mean after the original
    retry_delay_s: float = 1.5
    canary_period_s: float = 30.0
    redelivery_fraction: float = 0.002
    redelivery_delay_s: tuple[float, float] = (2.0, 90.0)
    inline_label_fraction: float = 0.2
    label_delay_median_s: float = 60.0
    label_delay_max_s: float = 1800.0
    latency_ms_median: float = 6.0

    def __post_init__(self) -> None:
        if self.n_callers < 1:
            raise ValueError("n_callers must be >= 1")
        if self.rate <= 0:
            raise ValueError("rate must be > 0")
        for name in ("retry_fraction", "redelivery_fraction", "inline_label_fraction", "diurnal_amplitude"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.canary_period_s <= 0:
            raise ValueError("canary_period_s must be > 0")


@dataclass(frozen=True)
class Background:
    """Unsorted background events; ``parent`` is the id (row) a retry repeats, else -1."""

    t: np.ndarray
    kind: np.ndarray
    actor: np.ndarray
    parent: np.ndarray


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Normalised Zipf weights for ranks 1..n."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return w / w.sum()  # type: ignore[no-any-return]


def background(
    rng: np.random.Generator, cfg: TrafficConfig, n_min: int, start_ts: float, caller_weights: np.ndarray,
    batch_actor0: int, canary_actor: int,
) -> Background:  # fmt: skip
    """Benign callers, batch-job bursts, retries and the canary until at least ``n_min`` events."""
    ts_l: list[np.ndarray] = []
    kind_l: list[np.ndarray] = []
    actor_l: list[np.ndarray] = []
    parent_l: list[np.ndarray] = []
    canary_offset = float(rng.uniform(0.0, cfg.canary_period_s))
    n_slices = int(_SEGMENT_S / _SLICE_S)
    total = 0
    seg = 0
    while total < n_min:
        t0 = seg * _SEGMENT_S
        starts = t0 + _SLICE_S * np.arange(n_slices)
        hour = ((start_ts + starts + _SLICE_S / 2) / 3600.0) % 24.0
        mult = 1.0 + cfg.diurnal_amplitude * np.cos(2 * np.pi * (hour - cfg.diurnal_peak_hour_utc) / 24.0)
        mult *= np.exp(cfg.rate_jitter * rng.standard_normal(n_slices) - cfg.rate_jitter**2 / 2)
        counts = rng.poisson(cfg.rate * mult * _SLICE_S)
        t_call = np.repeat(starts, counts) + rng.random(int(counts.sum())) * _SLICE_S
        callers = rng.choice(len(caller_weights), size=t_call.size, p=caller_weights)
        # client retries: same payload, new event id, shortly after
        is_retry = rng.random(t_call.size) < cfg.retry_fraction
        t_retry = t_call[is_retry] + 0.2 + rng.exponential(cfg.retry_delay_s, int(is_retry.sum()))
        parent_retry = total + np.flatnonzero(is_retry)
        # batch jobs: bursts of many queries within seconds
        t_batch_l, a_batch_l = [], []
        for j in range(cfg.n_batch_jobs):
            n_runs = rng.poisson(_SEGMENT_S / cfg.batch_interval_s)
            for t_run in np.sort(rng.uniform(t0, t0 + _SEGMENT_S, n_runs)):
                size = int(rng.integers(cfg.batch_size[0], cfg.batch_size[1] + 1))
                dur = size / rng.uniform(*cfg.batch_throughput)
                t_batch_l.append(t_run + np.sort(rng.random(size)) * dur)
                a_batch_l.append(np.full(size, batch_actor0 + j))
        t_batch = np.concatenate(t_batch_l) if t_batch_l else np.empty(0)
        a_batch = np.concatenate(a_batch_l) if a_batch_l else np.empty(0, dtype=np.int64)
        # the health-check canary: one fixed input every canary_period_s
        k0 = int(np.ceil((t0 - canary_offset) / cfg.canary_period_s))
        k1 = int(np.ceil((t0 + _SEGMENT_S - canary_offset) / cfg.canary_period_s))
        t_can = canary_offset + cfg.canary_period_s * np.arange(max(k0, 0), max(k1, 0))
        parts = (
            (t_call, CALLER, callers, -1),
            (t_retry, RETRY, callers[is_retry], parent_retry),
            (t_batch, BATCH, a_batch, -1),
            (t_can, CANARY, np.full(t_can.size, canary_actor), -1),
        )
        for t, k, a, p in parts:
            ts_l.append(np.asarray(t, dtype=np.float64))
            kind_l.append(np.full(len(t), k, dtype=np.int8))
            actor_l.append(np.asarray(a, dtype=np.int32))
            parent_l.append(np.broadcast_to(np.asarray(p, dtype=np.int64), (len(t),)).copy())
            total += len(t)
        seg += 1
    return Background(
        t=np.concatenate(ts_l), kind=np.concatenate(kind_l), actor=np.concatenate(actor_l),
        parent=np.concatenate(parent_l),
    )  # fmt: skip


@dataclass(frozen=True)
class Skeleton:
    """The final stream order: ``ts`` is arrival (event) time in epoch seconds, millisecond-rounded."""

    ts: np.ndarray
    kind: np.ndarray
    actor: np.ndarray
    aux: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)


def assemble(
    rng: np.random.Generator, cfg: TrafficConfig, bg: Background, start_ts: float, n_events: int,
    attack_starts: list[int], attack_counts: list[int], attack_gaps: list[float], attack_actors: list[int],
    redeliveries: bool,
) -> Skeleton:  # fmt: skip
    """Merge background and attack queries (and redeliveries), sort by time and cut at ``n_events``."""
    bg_t = np.round((start_ts + bg.t) * 1000.0) / 1000.0
    bg_sorted = np.sort(bg_t)
    t_l, k_l, a_l, x_l = [bg_t], [bg.kind], [bg.actor], [bg.parent]
    for start, count, gap, attacker in zip(attack_starts, attack_counts, attack_gaps, attack_actors, strict=True):
        t_first = bg_sorted[min(start, bg_sorted.size - 1)] + 0.0005
        gaps = gap * np.exp(0.6 * rng.standard_normal(count))
        gaps[0] = 0.0
        t_l.append(np.round((t_first + np.cumsum(gaps)) * 1000.0) / 1000.0)
        k_l.append(np.full(count, ATTACK, dtype=np.int8))
        a_l.append(np.full(count, attacker, dtype=np.int32))
        x_l.append(np.arange(count, dtype=np.int64))
    t, kind, actor, aux = (np.concatenate(v) for v in (t_l, k_l, a_l, x_l))
    ids = np.arange(t.size)
    if redeliveries and cfg.redelivery_fraction > 0:
        keep = np.lexsort((ids, t))[:n_events]
        pick = keep[rng.random(keep.size) < cfg.redelivery_fraction]
        lo, hi = cfg.redelivery_delay_s
        t_red = np.round((t[pick] + rng.uniform(lo, hi, pick.size)) * 1000.0) / 1000.0
        t = np.concatenate([t, t_red])
        kind = np.concatenate([kind, np.full(pick.size, REDELIVERY, dtype=np.int8)])
        actor = np.concatenate([actor, actor[pick]])
        aux = np.concatenate([aux, pick])
        ids = np.arange(t.size)
    order = np.lexsort((ids, t))[:n_events]
    if order.size < n_events:
        raise RuntimeError("internal: background too short for n_events")
    # re-point retry and redelivery parents from ids to stream positions
    pos_of_id = np.full(t.size, -1, dtype=np.int64)
    pos_of_id[order] = np.arange(order.size)
    kind, actor, aux = kind[order], actor[order], aux[order]
    linked = (kind == RETRY) | (kind == REDELIVERY)
    aux = aux.copy()
    aux[linked] = pos_of_id[aux[linked]]
    if np.any(aux[linked] < 0) or np.any(aux[linked] >= np.flatnonzero(linked)):
        raise RuntimeError("internal: a repeated event precedes its original")
    return Skeleton(ts=t[order], kind=kind, actor=actor, aux=aux)
