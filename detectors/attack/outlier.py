"""Per-event adversarial / outlier scoring of inputs off the reference data manifold.

Method
------
**Reference.** The detector learns "normal" from a *caller-capped* reference: the first
``reference_events`` events of the route in which no caller holds more than ``caller_cap`` of
the rows (:class:`~detectors.attack.reference.CappedReference`; a batch job or a busy partner
cannot define the manifold). Reference events are not scored.

**Model** (:class:`~detectors.attack.subspace.SubspaceModel`). Per-feature monotone transforms
learned on the reference (heavy-tailed amounts, counts, durations and ratios to a log scale), a
robust standardisation (median, IQR) and a whitened PCA basis. Each event gets three statistics:

* ``resid`` - energy on the minor axes (beyond the ``k`` axes keeping ``var_kept`` of the
  variance), each axis whitened by its (floored) reference variance: how far the input is *off*
  the reference subspace. Perturbations such as FGSM/PGD push along directions natural data
  hardly uses (broken correlations between features);
* ``maha`` - Mahalanobis distance on the ``k`` major axes: how atypical the input is along
  the directions natural data does vary in;
* ``atoms`` - surprisal of leaving point masses of the reference (a blank background pixel,
  a zero count): a value in the otherwise empty band next to the atom is rare, and a larger
  departure never scores less than a smaller one.

**Calibration.** Each statistic is divided by its own threshold for a false-positive rate of
``context.event_fpr / 3``, set on cross-fitted held-out scores of the reference (two halves, each
scored by a model fitted on the other) with a generalised-Pareto tail fit (see
:func:`~detectors.attack.subspace.tail_threshold`); an event is flagged when the largest of the
three exceeds 1 (a Bonferroni split of the budget). Nothing is memorised: benign inputs that never
occurred in the reference score low as long as they lie on the reference manifold.

**Population shifts.** After a covariate drift, many benign events leave the old reference and
per-event alerts would become a storm that says nothing about any one event. The detector watches
its own flag rate with a Bernoulli CUSUM (budget ``event_fpr`` against ``shift_factor`` times it),
in which only flags of callers that are part of the current reference count (the population the
reference describes; at most a few thousand names, kept in state), and each such caller's flag at
most once per ``shift_caller_window`` scored events: only flags from many distinct established
callers add up. One caller flooding out-of-distribution queries (a model thief), or attackers
using fresh accounts, are not a population shift and cannot make the detector forget its
reference. When the CUSUM exceeds ``log(shift_arl)`` (``shift_arl``: a
lower bound on the expected events between false alarms of this test at the budget), the route
is in a *population shift*: a fresh caller-capped reference is collected from the following
events. The alert of the event that completed the alarm says that per-event alerts pause; in the
meantime atypical events are returned only as ``FlaggedEvent`` rows (for review, with the shift in
their reason), never as findings: "atypical for a reference the population has left" is not evidence
about one event, and one alert per such event is exactly the storm a reviewer cannot use. Once
complete the new reference replaces the old one (recorded in state and in every later explanation). All
counts are in events, decided event by event, so batch boundaries do not matter.

Kind rule (documented for reviewers): a flagged event is ``adversarial`` when the off-manifold
part dominates (``max(resid, atoms) >= maha``) **and** the input looks otherwise natural - its
in-subspace statistic is within its threshold (``maha <= 1``) or the model's answer is unusually
close to a decision boundary (margin below the reference's ``margin_quantile``). Everything else
is ``outlier`` (far from the data in every sense: unit errors, garbage, uniform noise).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np

from detectors.attack._shift import ShiftMonitor
from detectors.attack.reference import CappedReference
from detectors.attack.subspace import SubspaceModel
from detectors.base import (
    EMPTY_OUTPUT,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    FlaggedEvent,
    Kind,
    Severity,
    register,
    with_rfc3339,
)
from pipeline.events import EventBatch

#: refreshes remembered in state and explanations
MAX_REFRESH_HISTORY = 10


@register
class OutlierDetector(Detector):
    """Flags single events whose inputs lie off the reference manifold.

    Parameters
    ----------
    context : DetectorContext
        Route, schema, seed and ``event_fpr`` (the per-event false-positive budget).
    reference_events : int, default 2000
        Size of the reference (caller-capped; cross-fitted calibration on its two halves).
    caller_cap : float, default 0.02
        Largest share of the reference one caller may hold.
    reference_patience : float, default 3.0
        A reference still short after ``reference_patience * reference_events`` events (very few
        callers) is completed with the earliest skipped events.
    var_kept : float, default 0.9
        Share of the reference variance the PCA subspace keeps.
    max_components : int, default 32
        Upper bound on the subspace dimension.
    clip : float, default 1000.0
        Standardised values are clipped to +-clip (keeps scores finite on garbage input).
    margin_quantile : float, default 0.05
        Reference quantile of the answer margin below which an off-subspace event is called
        ``adversarial`` even if it is atypical inside the subspace.
    refresh : bool, default True
        Refresh the reference after a population shift (see the module docstring).
    shift_factor : float, default 10.0
        Flag rate (as a multiple of ``event_fpr``) the shift CUSUM is tuned to detect.
    shift_arl : float, default 1e6
        The CUSUM threshold is ``log(shift_arl)``: at least about ``shift_arl`` events between
        false shift alarms while the flag rate is at the budget.
    shift_caller_window : int, default 1000
        A caller's flags count at most once per this many scored events in the shift CUSUM.
    repeat_horizon : float, default 86400.0
        Seconds of event time: an exact repeat (same numeric input, same caller) of an input
        already flagged for that caller, seen again within this time of its previous sighting,
        raises no new per-event alert (a canary or a retrying client; counted in state).
    max_repeat_keys : int, default 100000
        Flagged (caller, input) pairs remembered for repeat suppression (least recently seen
        forgotten first).

    Examples
    --------
    >>> from pipeline.events import batch_from_arrays
    >>> from detectors.base import DetectorContext
    >>> from pipeline.events import FeatureSchema, RouteKey
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(3, 8))
    >>> X = rng.normal(size=(2400, 3)) @ W + 0.05 * rng.normal(size=(2400, 8))
    >>> X[2300] += 3.0 * rng.normal(size=8)          # breaks the correlation structure
    >>> ctx = DetectorContext(RouteKey("m", None), FeatureSchema(tuple(f"f{i}" for i in range(8))))
    >>> det = OutlierDetector(ctx)
    >>> out = det.process(batch_from_arrays(X, client_ids=[f"c{i % 100}" for i in range(len(X))]))
    >>> [f.trigger_event_id for f in out.findings], out.findings[0].kind.value
    (['e2300'], 'adversarial')
    >>> out.findings[0].explanation["summary"].split(":")[0]
    'input off the reference manifold (off-subspace energy 431.5x its threshold)'
    """

    name: ClassVar[str] = "outlier"
    state_version: ClassVar[int] = 3

    def __init__(
        self,
        context: DetectorContext,
        *,
        reference_events: int = 2000,
        caller_cap: float = 0.02,
        reference_patience: float = 3.0,
        var_kept: float = 0.9,
        max_components: int = 32,
        clip: float = 1000.0,
        margin_quantile: float = 0.05,
        refresh: bool = True,
        shift_factor: float = 10.0,
        shift_arl: float = 1e6,
        shift_caller_window: int = 1000,
        repeat_horizon: float = 86400.0,
        max_repeat_keys: int = 100_000,
    ) -> None:
        if reference_events < 50:
            raise ValueError("reference_events must be >= 50")
        if not 0.0 < caller_cap <= 1.0:
            raise ValueError("caller_cap must be in (0, 1]")
        if reference_patience < 1.0:
            raise ValueError("reference_patience must be >= 1")
        if not 0.0 < var_kept < 1.0:
            raise ValueError("var_kept must be in (0, 1)")
        if max_components < 1:
            raise ValueError("max_components must be >= 1")
        if clip <= 0:
            raise ValueError("clip must be > 0")
        if not 0.0 <= margin_quantile < 1.0:
            raise ValueError("margin_quantile must be in [0, 1)")
        if not 0.0 < context.event_fpr < 1.0:
            raise ValueError("context.event_fpr must be in (0, 1)")
        if shift_factor <= 1.0 or shift_factor * context.event_fpr >= 1.0:
            raise ValueError("shift_factor must be > 1 with shift_factor * event_fpr < 1")
        if shift_arl <= 1.0 or shift_caller_window < 1:
            raise ValueError("shift_arl must be > 1 and shift_caller_window >= 1")
        if repeat_horizon < 0 or max_repeat_keys < 1:
            raise ValueError("repeat_horizon must be >= 0 and max_repeat_keys >= 1")
        super().__init__(
            context, reference_events=reference_events, caller_cap=caller_cap,
            reference_patience=reference_patience, var_kept=var_kept,
            max_components=max_components, clip=clip, margin_quantile=margin_quantile, refresh=refresh,
            shift_factor=shift_factor, shift_arl=shift_arl, shift_caller_window=shift_caller_window,
            repeat_horizon=repeat_horizon, max_repeat_keys=max_repeat_keys,
        )
        self.repeat_horizon = float(repeat_horizon)
        self.max_repeat_keys = int(max_repeat_keys)
        # flagged (caller, input) -> [last seen ts, repeats suppressed, first alert's event id]
        self._repeats: OrderedDict[str, list[Any]] = OrderedDict()
        self.n_suppressed = 0
        self.reference_events = reference_events
        self.caller_cap = caller_cap
        self.reference_patience = reference_patience
        self.var_kept = var_kept
        self.max_components = max_components
        self.clip = clip
        self.margin_quantile = margin_quantile
        self.refresh = refresh
        self.monitor = ShiftMonitor(context.event_fpr, shift_factor, shift_arl, shift_caller_window,
                                    count_anonymous=True)
        self._coll = self._new_collector()
        self._model: SubspaceModel | None = None
        self.threshold = 1.0  # each statistic is scaled to its share of the budget
        self.margin_low = float("nan")
        self._ref_span: tuple[float, float] = (float("nan"), float("nan"))
        self.n_scored = 0
        self.n_flagged = 0
        self.shift: dict[str, Any] | None = None  # while a new reference is collected
        self._next: CappedReference | None = None
        self.refreshes: list[dict[str, Any]] = []

    def _new_collector(self) -> CappedReference:
        n = self.reference_events
        return CappedReference(n, self.context.schema.n_numeric, math.ceil(self.caller_cap * n),
                               int(self.reference_patience * n))

    # ---------------------------------------------------------------------------------------
    def _fit(self, coll: CappedReference) -> None:
        X, mg, ts = coll.arrays()
        self._model, _ = SubspaceModel.fit(X, self.var_kept, self.max_components, self.clip,
                                           fpr=self.context.event_fpr)
        mg = mg[np.isfinite(mg)]
        self.margin_low = float(np.quantile(mg, self.margin_quantile)) if mg.size else float("nan")
        self._ref_span = (float(ts.min()), float(ts.max()))
        self.monitor.restart(coll.counts)

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(score, resid, maha, atoms)`` of raw inputs (after the reference period)."""
        if self._model is None:
            raise RuntimeError("reference period not complete")
        r, m, a = self._model.scores(np.asarray(X, dtype=np.float64))
        return np.maximum(np.maximum(r, m), a), r, m, a

    def _repeat_key(self, batch: EventBatch, k: int) -> str:
        cid = batch.client_ids[k]
        h = hashlib.blake2b(np.ascontiguousarray(batch.X[k], dtype=np.float64).tobytes(), digest_size=8)
        return f"{'' if cid is None else cid}\x00{h.hexdigest()}"

    def _repeat_pass(self, batch: EventBatch, start: int, rows: np.ndarray, commit: bool) -> np.ndarray:
        """Which of the flagged rows ``start + rows`` (in stream order) are exact repeats of an
        input already flagged for the same caller and last seen within ``repeat_horizon``.

        Decided event by event (batch-invariant). With ``commit`` the memory is updated (a new
        flagged input is remembered, a repeat renews its sighting and is counted), else the
        decisions are only computed (an overlay keeps later rows of the batch consistent).
        """
        mem = self._repeats
        overlay: dict[str, float] = {}
        out = np.zeros(len(rows), dtype=bool)
        for q, i in enumerate(rows.tolist()):
            k = start + i
            key = self._repeat_key(batch, k)
            t = float(batch.ts[k])
            last = overlay.get(key)
            if last is None and key in mem:
                last = float(mem[key][0])
            rep = last is not None and t - last <= self.repeat_horizon
            out[q] = rep
            if not commit:
                overlay[key] = t
                continue
            if rep:
                e = mem[key]
                e[0] = t
                e[1] += 1
                mem.move_to_end(key)
                self.n_suppressed += 1
            else:
                mem[key] = [t, 0, batch.event_ids[k]]
                mem.move_to_end(key)
                while len(mem) > self.max_repeat_keys:
                    mem.popitem(last=False)
        return out

    def process(self, batch: EventBatch) -> DetectorOutput:
        start = 0
        if self._model is None:
            done = self._coll.add(batch)
            if done is None:
                return EMPTY_OUTPUT
            self._fit(self._coll)
            self._coll = self._new_collector()
            start = done + 1
        findings: list[Finding] = []
        flagged: list[FlaggedEvent] = []
        while start < len(batch):
            X = batch.X[start:]
            s, r, m, a = self.score(X)
            raw_hit = np.flatnonzero(s > self.threshold)
            hit = s > self.threshold
            if raw_hit.size:
                hit[raw_hit[self._repeat_pass(batch, start, raw_hit, commit=False)]] = False
            end = len(batch)
            alarm = done = None
            if self.shift is None:
                alarm = self.monitor.advance(batch.client_ids[start:], hit, enabled=self.refresh)
                if alarm is not None:
                    end = start + alarm + 1
            else:
                assert self._next is not None
                done = self._next.add(batch, start)
                if done is not None:
                    end = done + 1
            self.n_scored += end - start
            if raw_hit.size:
                self._repeat_pass(batch, start, raw_hit[raw_hit < end - start], commit=True)
            h = np.flatnonzero(hit[: end - start])
            if h.size:
                self._emit(batch, start, h, X, s, r, m, a, findings, flagged,
                           alarm_row=None if alarm is None else start + alarm)
            if alarm is not None:
                k = start + alarm
                self.shift = {"at_event": batch.event_ids[k], "at_ts": float(batch.ts[k]),
                              "cusum_threshold": self.monitor.threshold}
                self._next = self._new_collector()
            if done is not None:
                assert self._next is not None and self.shift is not None
                k = done
                self._fit(self._next)
                self.refreshes.append({
                    "at_event": batch.event_ids[k], "at_ts": float(batch.ts[k]),
                    "shift_at_event": self.shift["at_event"], "shift_at_ts": self.shift["at_ts"],
                    "reference_period": with_rfc3339(dict(zip(("start", "end"), self._ref_span, strict=True))),
                    "distinct_callers": self._next.distinct_callers(),
                })
                self.refreshes = self.refreshes[-MAX_REFRESH_HISTORY:]
                self.shift = None
                self._next = None
            start = end
        if not findings and not flagged:
            return EMPTY_OUTPUT
        return DetectorOutput(findings=tuple(findings), flagged=tuple(flagged))

    def _emit(self, batch: EventBatch, start: int, h: np.ndarray, X: np.ndarray, s: np.ndarray,
              r: np.ndarray, m: np.ndarray, a: np.ndarray, findings: list[Finding],
              flagged: list[FlaggedEvent], alarm_row: int | None = None) -> None:
        mdl = self._model
        assert mdl is not None
        self.n_flagged += int(h.size)
        Zh = np.abs(mdl.transform(X[h]))
        names = self.context.schema.numeric
        q99 = mdl.z_q99 if mdl.z_q99 is not None else np.full(len(names), np.nan)
        margin = batch.margin[start:]
        shift = self.shift
        n_atoms_off = None
        if mdl.atom_idx.size:
            V = X[h][:, mdl.atom_idx]
            n_atoms_off = ((V != mdl.atom_val) & ~np.isnan(V)).sum(axis=1)
        for q, i in enumerate(h.tolist()):
            k = start + i
            low_margin = bool(np.isfinite(margin[i]) and np.isfinite(self.margin_low)
                              and margin[i] < self.margin_low)
            off = max(r[i], a[i])
            adversarial = bool(off >= m[i] and (m[i] <= 1.0 or low_margin))
            kind = Kind.ADVERSARIAL if adversarial else Kind.OUTLIER
            row = Zh[q]
            top = np.argsort(-row, kind="stable")[:5]
            ratio = float(s[i] / self.threshold)
            sev = Severity.CRITICAL if ratio >= 3.0 else Severity.WARNING
            stat = max((("off-subspace energy", r[i]), ("in-subspace distance", m[i]),
                        ("departures from exact reference values", a[i])), key=lambda t: t[1])
            feats = ", ".join(
                f"{names[j] if j < len(names) else f'f{j}'} z={row[j]:.1f} (reference p99 {q99[j]:.1f})"
                for j in top[:3].tolist()
            )
            summary = (f"input {'off' if kind is Kind.ADVERSARIAL else 'far from'} the reference manifold "
                       f"({stat[0]} {stat[1]:.1f}x its threshold): {feats}")
            if stat[0].startswith("departures") and n_atoms_off is not None:
                summary += f"; {int(n_atoms_off[q])} of {mdl.atom_idx.size} usually-constant features moved"
            if low_margin:
                summary += f"; answer margin {margin[i]:.3f} below the reference's {self.margin_quantile:.0%} quantile"
            if shift is not None:
                # in a population shift "atypical for the old reference" is not evidence about this
                # event: it is kept as a flagged event for review, not raised as an alert
                summary += (f"; route in a population shift since event {shift['at_event']} "
                            f"(reference being refreshed: {self._next.n if self._next else 0}/{self.reference_events}); "
                            "no alert raised")
                flagged.append(FlaggedEvent(batch.event_ids[k], self.name, float(s[i]), self.threshold, summary,
                                            batch.client_ids[k]))
                continue
            if k == alarm_row:
                summary += ("; this flag completed a population shift of the route (flags of established "
                            "callers well above the budget): further per-event alerts are paused and "
                            "atypical events only recorded as flagged until the reference is refreshed")
            elif self.refreshes:
                summary += f"; reference refreshed at event {self.refreshes[-1]['at_event']} after a population shift"
            expl: dict[str, Any] = {
                "summary": summary,
                "statistic": "max(resid, maha, atoms), each / its cross-fitted threshold at event_fpr/4 (atoms: near or far)",
                "resid": float(r[i]),
                "maha": float(m[i]),
                "atoms": float(a[i]),
                "margin": float(margin[i]) if np.isfinite(margin[i]) else None,
                "margin_low": self.margin_low if np.isfinite(self.margin_low) else None,
                "kind_rule": "adversarial if max(resid, atoms) >= maha and (maha <= 1 or margin < margin_low)",
                "top_features": [
                    {"feature": names[j] if j < len(names) else f"f{j}", "robust_z": float(row[j]),
                     "reference_p99": float(q99[j])}
                    for j in top.tolist()
                ],
                "log_transformed_features": [names[j] for j in mdl.tf.idx.tolist() if j < len(names)],
                "subspace_dim": int(mdl.k),
                "reference_events": self.reference_events,
                "reference_caller_cap": self.caller_cap,
                "reference_period": with_rfc3339(dict(zip(("start", "end"), self._ref_span, strict=True))),
                "population_shift": dict(shift) if shift is not None else None,
                "population_shift_starts_here": k == alarm_row,
                "reference_refreshed": dict(self.refreshes[-1]) if self.refreshes else None,
                "event_fpr": self.context.event_fpr,
                "config_hash": self.config_hash,
            }
            eid = batch.event_ids[k]
            cid = batch.client_ids[k]
            t = float(batch.ts[k])
            findings.append(Finding(
                kind=kind, detector=self.name, config_hash=self.config_hash, trigger_event_id=eid,
                raised_at=t, score=float(s[i]), threshold=self.threshold, severity=sev,
                explanation=expl, client_id=cid, window_start=t, window_end=t, event_ids=(eid,),
            ))
            flagged.append(FlaggedEvent(eid, self.name, float(s[i]), self.threshold, summary, cid))

    # ---------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "collector": self._coll.state() if self._model is None else None,
            "model": self._model.state() if self._model is not None else None,
            "margin_low": self.margin_low,
            "ref_span": list(self._ref_span),
            "n_scored": self.n_scored,
            "n_flagged": self.n_flagged,
            **self.monitor.state(),
            "shift": dict(self.shift) if self.shift is not None else None,
            "next": self._next.state() if self._next is not None else None,
            "refreshes": [dict(x) for x in self.refreshes],
            "repeats": {"keys": list(self._repeats),
                        "last_ts": np.array([v[0] for v in self._repeats.values()], dtype=np.float64),
                        "suppressed": np.array([v[1] for v in self._repeats.values()], dtype=np.int64),
                        "first_event": [v[2] for v in self._repeats.values()]},
            "n_suppressed": self.n_suppressed,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._coll = self._new_collector()
        if state["model"] is None:
            self._model = None
            self._coll.load(state["collector"])
        else:
            self._model = SubspaceModel.load(state["model"])
        self.margin_low = float(state["margin_low"])
        self._ref_span = (float(state["ref_span"][0]), float(state["ref_span"][1]))
        self.n_scored = int(state["n_scored"])
        self.n_flagged = int(state["n_flagged"])
        self.monitor.load(state)
        self.shift = dict(state["shift"]) if state["shift"] is not None else None
        self._next = None
        if state["next"] is not None:
            self._next = self._new_collector()
            self._next.load(state["next"])
        self.refreshes = [dict(x) for x in state["refreshes"]]
        rp = state["repeats"]
        self._repeats = OrderedDict(
            (k, [float(t), int(c), e]) for k, t, c, e in zip(
                rp["keys"], np.asarray(rp["last_ts"]).tolist(), np.asarray(rp["suppressed"]).tolist(),
                rp["first_event"], strict=True)
        )
        self.n_suppressed = int(state["n_suppressed"])
