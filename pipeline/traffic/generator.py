"""Turn a scenario into a deterministic stream of prediction-log and label messages.

:func:`plan` draws the cast (callers, batch jobs, canary, attackers), the attackers' queries and
the stream's skeleton, and knows the :class:`GroundTruth` before any payload exists.
:meth:`TrafficPlan.iter_events` then produces payloads in vectorised chunks of
``CHUNK`` events with bounded memory; :func:`generate` collects everything into lists.

Randomness: every draw comes from ``numpy.random.default_rng`` seeded with ``[seed, stream]``
(``[seed, 9, chunk]`` for payload chunks), so output depends only on the arguments.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.traffic import schedule as sk
from pipeline.traffic.attacks import attacker_queries
from pipeline.traffic.datasets import Dataset, sample_classes
from pipeline.traffic.drift import ConceptDrift, CorrelationDrift, CovariateDrift, PriorShift
from pipeline.traffic.model import SimModel, get_model
from pipeline.traffic.scenarios import Scenario, get_scenario
from pipeline.traffic.timefmt import DEFAULT_START_TS
from pipeline.traffic.truth import AttackerTruth, ChangePoint, GroundTruth

#: events per payload chunk (fixed: output does not depend on how the caller consumes it)
CHUNK = 4096

_BATCH_NAMES = ("nightly-rescore", "partner-backfill", "audit-sample", "risk-review", "reindex", "export")
_INSIDER_RANK = 15  # the insider is an established, mid-volume account

Message = dict[str, Any]


@dataclass
class Traffic:
    """A generated stream: prediction messages (stream order, sorted by ``ts`` except that a
    redelivery repeats an earlier message verbatim later on), label messages (sorted by ``ts``),
    the ground truth and the simulated model that answered."""

    predictions: list[Message]
    labels: list[Message]
    truth: GroundTruth
    model: SimModel = field(repr=False)


@dataclass
class _Cast:
    client_ids: list[str]  # per actor
    priors: np.ndarray  # per actor class mix
    n_callers: int
    batch0: int
    canary: int
    attack0: int
    insider_actor: int | None


class TrafficPlan:
    """A planned stream: ground truth known up front, payloads produced on iteration."""

    def __init__(
        self, scenario: str | Scenario = "mixed", n_events: int = 20000, seed: int = 0, dataset: str = "tabular",
        start_ts: float = DEFAULT_START_TS, label_fraction: float = 0.3, redeliveries: bool = False,
        config: sk.TrafficConfig | None = None, model_name: str | None = None, model_version: str | None = "1",
        model_seed: int = 0,
    ) -> None:  # fmt: skip
        if n_events < 1:
            raise ValueError(f"n_events must be >= 1, got {n_events}")
        if not 0.0 <= label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in [0, 1], got {label_fraction}")
        self.scenario = get_scenario(scenario)
        self.n_events = int(n_events)
        self.seed = int(seed)
        self.start_ts = float(start_ts)
        self.label_fraction = float(label_fraction)
        self.cfg = config or sk.TrafficConfig()
        self.model = get_model(dataset, model_seed)
        self.dataset: Dataset = self.model.dataset
        self.model_name = model_name or dataset
        self.model_version = model_version
        self._classes = np.array(self.dataset.classes, dtype=object)
        self._cast = self._draw_cast()
        self._attack_X = [
            attacker_queries(a, self.model, np.random.default_rng([self.seed, 3, k]), self.n_events)
            for k, a in enumerate(self.scenario.attackers)
        ]
        self.skeleton = self._draw_skeleton(redeliveries)
        self._canary_X = self.dataset.sample(np.random.default_rng([self.seed, 5]), np.zeros(1, dtype=np.intp))
        self.truth = self._truth()

    # ------------------------------------------------------------------ planning
    def _draw_cast(self) -> _Cast:
        rng = np.random.default_rng([self.seed, 1])
        cfg, ds = self.cfg, self.dataset
        n_att = len(self.scenario.attackers)
        numbers = rng.choice(90000, size=cfg.n_callers + n_att, replace=False) + 10000
        callers = [f"acct-{n}" for n in numbers[: cfg.n_callers]]
        batch = [f"svc-batch-{_BATCH_NAMES[j % len(_BATCH_NAMES)]}{'' if j < len(_BATCH_NAMES) else j}"
                 for j in range(cfg.n_batch_jobs)]  # fmt: skip
        insider = min(_INSIDER_RANK, cfg.n_callers - 1)
        attackers = [
            callers[insider] if a.kind == "insider" else f"acct-{numbers[cfg.n_callers + k]}"
            for k, a in enumerate(self.scenario.attackers)
        ]
        pri_call = rng.dirichlet(cfg.caller_mix_concentration * ds.prior, size=cfg.n_callers)
        pri_batch = rng.dirichlet(cfg.batch_mix_concentration * ds.prior + 0.05, size=cfg.n_batch_jobs)
        priors = np.vstack([pri_call, pri_batch.reshape(-1, ds.n_classes), np.tile(ds.prior, (1 + n_att, 1))])
        has_insider = any(a.kind == "insider" for a in self.scenario.attackers)
        return _Cast(
            client_ids=callers + batch + ["svc-healthcheck"] + attackers, priors=priors,
            n_callers=cfg.n_callers, batch0=cfg.n_callers, canary=cfg.n_callers + cfg.n_batch_jobs,
            attack0=cfg.n_callers + cfg.n_batch_jobs + 1, insider_actor=insider if has_insider else None,
        )  # fmt: skip

    def _draw_skeleton(self, redeliveries: bool) -> sk.Skeleton:
        rng = np.random.default_rng([self.seed, 2])
        c = self._cast
        bg = sk.background(rng, self.cfg, self.n_events, self.start_ts,
                           sk.zipf_weights(c.n_callers, self.cfg.zipf_exponent), c.batch0, c.canary)  # fmt: skip
        atk = self.scenario.attackers
        return sk.assemble(
            rng, self.cfg, bg, self.start_ts, self.n_events,
            attack_starts=[a.start_index(self.n_events) for a in atk],
            attack_counts=[x.shape[0] for x in self._attack_X],
            attack_gaps=[a.gap_median() for a in atk],
            attack_actors=[c.attack0 + k for k in range(len(atk))],
            redeliveries=redeliveries,
        )  # fmt: skip

    def _truth(self) -> GroundTruth:
        s, n, c = self.skeleton, self.n_events, self._cast
        cps = []
        for d in self.scenario.drifts:
            i0, i1 = (min(i, n - 1) for i in d.span(n))
            cps.append(ChangePoint(d.kind, i0, float(s.ts[i0]), i1, float(s.ts[i1]),
                                   tuple(d.affected_features(self.dataset)), d.describe(self.dataset)))  # fmt: skip
        atk = []
        for k, a in enumerate(self.scenario.attackers):
            idx = np.flatnonzero((s.kind == sk.ATTACK) & (s.actor == c.attack0 + k))
            if idx.size == 0:
                continue
            atk.append(AttackerTruth(c.client_ids[c.attack0 + k], a.kind, int(idx[0]), float(s.ts[idx[0]]),
                                     int(idx[-1]), int(idx.size), tuple(idx.tolist())))  # fmt: skip
        attacker_ids = {a.client_id for a in atk}
        return GroundTruth(
            scenario=self.scenario.name, dataset=self.dataset.name, model=self.model_name, seed=self.seed,
            n_events=n, start_ts=self.start_ts, change_points=tuple(cps), attackers=tuple(atk),
            benign_client_ids=tuple(x for x in c.client_ids[: c.n_callers] if x not in attacker_ids),
            canary_id=c.client_ids[c.canary], batch_job_ids=tuple(c.client_ids[c.batch0 : c.canary]),
            n_retries=int(np.sum(s.kind == sk.RETRY)), n_redeliveries=int(np.sum(s.kind == sk.REDELIVERY)),
        )  # fmt: skip

    # ------------------------------------------------------------------ payloads
    def _benign_inputs(
        self, rng: np.random.Generator, pos: np.ndarray, actors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and true labels of benign events at stream positions ``pos``."""
        ds, n = self.dataset, self.n_events
        priors = self._cast.priors[actors].copy()
        drifts = self.scenario.drifts
        for d in drifts:
            if isinstance(d, PriorShift):
                d.apply_priors(priors, d.alpha(pos, n), rng, ds)
        y = sample_classes(rng, priors)
        Z = ds.sample_latent(rng, y)
        for d in drifts:
            if isinstance(d, CovariateDrift):
                d.apply_latent(Z, d.alpha(pos, n), ds)
            elif isinstance(d, CorrelationDrift):
                d.apply_latent(Z, y, d.alpha(pos, n), rng, ds)
        X = ds.finalize(rng, Z, y)
        labels = y
        for d in drifts:
            if isinstance(d, ConceptDrift):
                labels = d.apply_labels(X, labels, d.alpha(pos, n), rng, ds)
        return X, labels

    def iter_chunks(self) -> Iterator[tuple[np.ndarray, list[Message], list[Message]]]:
        """Per chunk: arrival times, prediction messages and the label messages they created."""
        s, ds, cfg, cast = self.skeleton, self.dataset, self.cfg, self._cast
        classes = self._classes
        base: Message = {"model": self.model_name}
        if self.model_version is not None:
            base["model_version"] = self.model_version
        canary_P = self.model.predict_proba(self._canary_X)
        canary_msg: Message = {
            **base, "client_id": cast.client_ids[cast.canary], "features": ds.payloads(self._canary_X)[0],
            "prediction": str(classes[int(np.argmax(canary_P[0]))]),
            "probabilities": dict(zip(ds.classes, np.round(canary_P[0], 4).tolist(), strict=True)),
        }  # fmt: skip
        # messages (and true labels) that a later retry or redelivery repeats, with pending repeats
        n_children = np.bincount(s.aux[(s.kind == sk.RETRY) | (s.kind == sk.REDELIVERY)], minlength=len(s))
        cache: dict[int, tuple[Message, str | None, int]] = {}
        med_lat = np.log(cfg.latency_ms_median)
        prefix = f"{self.model_name}-{self.seed}-"
        ids = cast.client_ids
        for c0 in range(0, len(s), CHUNK):
            rng = np.random.default_rng([self.seed, 9, c0 // CHUNK])
            sl = slice(c0, min(c0 + CHUNK, len(s)))
            kind, actor, aux, ts = s.kind[sl], s.actor[sl], s.aux[sl], s.ts[sl]
            pos = np.arange(sl.start, sl.stop)
            m = kind.size
            is_benign = (kind == sk.CALLER) | (kind == sk.BATCH)
            bi = np.flatnonzero(is_benign)
            Xb, yb = self._benign_inputs(rng, pos[bi], actor[bi])
            ai = np.flatnonzero(kind == sk.ATTACK)
            Xa = (np.vstack([self._attack_X[a - cast.attack0][q] for a, q in zip(actor[ai], aux[ai], strict=True)])
                  if ai.size else np.empty((0, ds.n_features)))  # fmt: skip
            rows = np.concatenate([bi, ai])
            X = np.vstack([Xb, Xa])
            P = self.model.predict_proba(X) if rows.size else np.empty((0, ds.n_classes))
            feats = ds.payloads(X)
            probs = np.round(P, 4).tolist()
            preds = classes[np.argmax(P, axis=1)].tolist() if rows.size else []
            classes_t = ds.classes
            # fresh messages (benign and attack rows), built in one pass
            eids = [f"{prefix}{p:08d}" for p in range(sl.start, sl.stop)]
            lat_l = np.round(np.exp(med_lat + 0.4 * rng.standard_normal(m)) * np.where(kind == sk.BATCH, 2.0, 1.0),
                             2).tolist()  # fmt: skip
            ts_l, kind_l, actor_l, aux_l = ts.tolist(), kind.tolist(), actor.tolist(), aux.tolist()
            msgs: list[Message | None] = [None] * m
            for j, f, pr, pb in zip(rows.tolist(), feats, preds, probs, strict=True):
                msgs[j] = {"event_id": eids[j], "ts": ts_l[j], **base, "client_id": ids[actor_l[j]], "features": f,
                           "prediction": pr, "probabilities": dict(zip(classes_t, pb, strict=True)),
                           "latency_ms": lat_l[j]}  # fmt: skip
            true_label: list[str | None] = [None] * m
            for j, y in zip(bi.tolist(), classes[yb].tolist(), strict=True):
                true_label[j] = y
            labelled = (rng.random(m) < self.label_fraction).tolist()
            inline = (rng.random(m) < cfg.inline_label_fraction).tolist()
            delay = np.clip(cfg.label_delay_median_s * np.exp(rng.standard_normal(m)), 1.0, cfg.label_delay_max_s)
            label_ts = (np.round((ts + delay) * 1000.0) / 1000.0).tolist()
            repeated = n_children[sl].tolist()
            out: list[Message] = []
            label_msgs: list[Message] = []
            for j in range(m):
                k = kind_l[j]
                msg = msgs[j]
                if msg is None:
                    if k == sk.REDELIVERY:
                        orig, _ = self._take(cache, aux_l[j])
                        out.append(dict(orig))
                        continue
                    if k == sk.RETRY:
                        orig, true_label[j] = self._take(cache, aux_l[j])
                        msg = {**orig, "event_id": eids[j], "ts": ts_l[j], "latency_ms": lat_l[j]}
                        msg.pop("label", None)
                    else:  # canary
                        msg = {"event_id": eids[j], "ts": ts_l[j], **canary_msg, "latency_ms": lat_l[j]}
                lab = true_label[j]
                if lab is not None and labelled[j]:
                    if inline[j]:
                        msg["label"] = lab
                    else:
                        label_msgs.append({"event_id": eids[j], "ts": label_ts[j], "label": lab,
                                           "model": self.model_name, "client_id": msg["client_id"]})  # fmt: skip
                if repeated[j]:
                    cache[sl.start + j] = (msg, lab, repeated[j])
                out.append(msg)
            yield ts, out, label_msgs

    @staticmethod
    def _take(cache: dict[int, tuple[Message, str | None, int]], key: int) -> tuple[Message, str | None]:
        """The cached original at ``key``; dropped once its last repeat has taken it."""
        msg, lab, left = cache[key]
        if left <= 1:
            del cache[key]
        else:
            cache[key] = (msg, lab, left - 1)
        return msg, lab

    def iter_events(self) -> Iterator[tuple[str, Message]]:
        """``("prediction", msg)`` and ``("label", msg)`` pairs merged in arrival-time order.

        A label is yielded just before the first prediction that arrives after it (labels still
        pending at the end follow the last prediction, in time order).
        """
        heap: list[tuple[float, int, Message]] = []
        seq = 0
        for ts, preds, labels in self.iter_chunks():
            for lab in labels:
                heapq.heappush(heap, (lab["ts"], seq, lab))
                seq += 1
            for t, msg in zip(ts.tolist(), preds, strict=True):
                while heap and heap[0][0] <= t:
                    yield "label", heapq.heappop(heap)[2]
                yield "prediction", msg
        while heap:
            yield "label", heapq.heappop(heap)[2]


def plan(
    scenario: str | Scenario = "mixed", n_events: int = 20000, seed: int = 0, dataset: str = "tabular",
    start_ts: float = DEFAULT_START_TS, label_fraction: float = 0.3, redeliveries: bool = False,
    config: sk.TrafficConfig | None = None, model_name: str | None = None, model_version: str | None = "1",
    model_seed: int = 0,
) -> TrafficPlan:  # fmt: skip
    """Plan a stream (see :class:`TrafficPlan`); nothing is materialised until iterated."""
    return TrafficPlan(scenario, n_events, seed, dataset, start_ts, label_fraction, redeliveries, config,
                       model_name, model_version, model_seed)  # fmt: skip


def generate(
    scenario: str | Scenario = "mixed", n_events: int = 20000, seed: int = 0, dataset: str = "tabular",
    start_ts: float = DEFAULT_START_TS, label_fraction: float = 0.3, redeliveries: bool = False,
    config: sk.TrafficConfig | None = None, model_name: str | None = None, model_version: str | None = "1",
    model_seed: int = 0,
) -> Traffic:  # fmt: skip
    """Generate a whole stream in memory: predictions, labels (sorted by ``ts``) and ground truth."""
    p = plan(scenario, n_events, seed, dataset, start_ts, label_fraction, redeliveries, config,
             model_name, model_version, model_seed)  # fmt: skip
    preds: list[Message] = []
    labels: list[Message] = []
    for _, out, labs in p.iter_chunks():
        preds.extend(out)
        labels.extend(labs)
    labels.sort(key=lambda m: (m["ts"], m["event_id"]))
    return Traffic(preds, labels, p.truth, p.model)


def iter_events(
    scenario: str | Scenario = "mixed", n_events: int = 20000, seed: int = 0, dataset: str = "tabular",
    **kwargs: Any,
) -> Iterator[tuple[str, Message]]:
    """Stream ``("prediction"|"label", message)`` pairs with bounded memory (see :func:`plan`)."""
    return plan(scenario, n_events, seed, dataset, **kwargs).iter_events()
