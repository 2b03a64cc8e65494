"""Per-event adversarial / outlier scoring of inputs off the reference data manifold.

Method
------
The first ``reference_events`` events of a route are the reference period (not scored). They are
split by parity: even-indexed events fit a robust standardisation (median, IQR) and a whitened
PCA basis (:class:`~detectors.attack._common.SubspaceModel`); odd-indexed events are held out
for calibration. Each event gets three statistics:

* ``resid`` - energy on the minor axes (beyond the ``k`` axes keeping ``var_kept`` of the
  variance), each axis whitened by its (floored) reference variance: how far the input is *off*
  the reference subspace. Perturbations such as FGSM/PGD push along directions natural data
  hardly uses (broken correlations between features);
* ``maha`` - Mahalanobis distance on the ``k`` major axes: how atypical the input is along
  the directions natural data does vary in;
* ``atoms`` - surprisal of leaving point masses of the reference (a blank background pixel,
  a zero amount), larger when the value stays *close* to the atom: the signature of a small
  perturbation of a natural input.

Each statistic is divided by its own threshold for a false-positive rate of
``context.event_fpr / 3`` on the held-out events (a peaks-over-threshold fit, see
:func:`~detectors.attack._common.tail_threshold`), and the event is flagged when the largest
of the three exceeds 1: the budget is split in equal thirds (Bonferroni), because the three
tails differ a lot. Nothing is memorised: benign inputs that never occurred in the reference
score low as long as they lie on the reference manifold.

Kind rule (documented for reviewers): a flagged event is ``adversarial`` when the off-manifold
part dominates (``max(resid, atoms) >= maha``) **and** the input looks otherwise natural - its
in-subspace statistic is within its threshold (``maha <= 1``) or the model's answer is unusually
close to a decision boundary (margin below the reference's ``margin_quantile``). Everything else
is ``outlier`` (far from the data in every sense: unit errors, garbage, uniform noise).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from detectors.attack._common import SubspaceModel, WarmupBuffer
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
)
from pipeline.events import EventBatch


@register
class OutlierDetector(Detector):
    """Flags single events whose inputs lie off the reference manifold.

    Parameters
    ----------
    context : DetectorContext
        Route, schema, seed and ``event_fpr`` (the per-event false-positive budget).
    reference_events : int, default 2000
        Length of the reference period (first events of the route; half fit, half calibrate).
    var_kept : float, default 0.9
        Share of the reference variance the PCA subspace keeps.
    max_components : int, default 32
        Upper bound on the subspace dimension.
    clip : float, default 1000.0
        Standardised values are clipped to +-clip (keeps scores finite on garbage input).
    margin_quantile : float, default 0.05
        Reference quantile of the answer margin below which an off-subspace event is called
        ``adversarial`` even if it is atypical inside the subspace.

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
    >>> out = det.process(batch_from_arrays(X, client_ids=["c"] * len(X)))
    >>> [f.trigger_event_id for f in out.findings], out.findings[0].kind.value
    (['e2300'], 'adversarial')
    """

    name: ClassVar[str] = "outlier"
    state_version: ClassVar[int] = 1

    def __init__(
        self,
        context: DetectorContext,
        *,
        reference_events: int = 2000,
        var_kept: float = 0.9,
        max_components: int = 32,
        clip: float = 1000.0,
        margin_quantile: float = 0.05,
    ) -> None:
        if reference_events < 50:
            raise ValueError("reference_events must be >= 50")
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
        super().__init__(
            context, reference_events=reference_events, var_kept=var_kept,
            max_components=max_components, clip=clip, margin_quantile=margin_quantile,
        )
        self.reference_events = reference_events
        self.var_kept = var_kept
        self.max_components = max_components
        self.clip = clip
        self.margin_quantile = margin_quantile
        self._buf = WarmupBuffer(reference_events, context.schema.n_numeric)
        self._model: SubspaceModel | None = None
        self.threshold = float("nan")
        self.margin_low = float("nan")
        self._ref_span: tuple[float, float] = (float("nan"), float("nan"))
        self.n_scored = 0
        self.n_flagged = 0

    # ---------------------------------------------------------------------------------------
    def _fit(self) -> None:
        X = self._buf.X
        self._model = SubspaceModel.fit(X[0::2], X[1::2], self.var_kept, self.max_components, self.clip,
                                        fpr=self.context.event_fpr)
        self.threshold = 1.0  # each statistic is already scaled to its share of the budget
        mg = self._buf.margin[np.isfinite(self._buf.margin)]
        self.margin_low = float(np.quantile(mg, self.margin_quantile)) if mg.size else float("nan")
        self._ref_span = (float(self._buf.ts[0]), float(self._buf.ts[-1]))
        self._buf.clear()

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(score, resid, maha, atoms)`` of raw inputs (after the reference period)."""
        if self._model is None:
            raise RuntimeError("reference period not complete")
        r, m, a = self._model.scores(np.asarray(X, dtype=np.float64))
        return np.maximum(np.maximum(r, m), a), r, m, a

    def process(self, batch: EventBatch) -> DetectorOutput:
        start = 0
        if self._model is None:
            start = self._buf.add(batch)
            if not self._buf.full:
                return EMPTY_OUTPUT
            self._fit()
        if start >= len(batch):
            return EMPTY_OUTPUT
        X = batch.X[start:]
        s, r, m, a = self.score(X)
        self.n_scored += len(s)
        hit = np.flatnonzero(s > self.threshold)
        if hit.size == 0:
            return EMPTY_OUTPUT
        self.n_flagged += int(hit.size)
        assert self._model is not None
        findings: list[Finding] = []
        flagged: list[FlaggedEvent] = []
        Zc = None
        margin = batch.margin[start:]
        for i in hit.tolist():
            k = start + i
            low_margin = bool(np.isfinite(margin[i]) and np.isfinite(self.margin_low)
                              and margin[i] < self.margin_low)
            off = max(r[i], a[i])
            adversarial = bool(off >= m[i] and (m[i] <= 1.0 or low_margin))
            kind = Kind.ADVERSARIAL if adversarial else Kind.OUTLIER
            if Zc is None:
                Zc = np.abs((X[hit] - self._model.center) / self._model.scale)
            row = Zc[int(np.searchsorted(hit, i))]
            row = np.nan_to_num(row, nan=0.0)
            top = np.argsort(-row, kind="stable")[:5]
            names = self.context.schema.numeric
            ratio = float(s[i] / self.threshold)
            sev = Severity.CRITICAL if ratio >= 3.0 else Severity.WARNING
            reason = (
                f"{kind.value}: off-subspace {r[i]:.2f}, in-subspace {m[i]:.2f}, atoms {a[i]:.2f} "
                f"(each / its threshold); threshold {self.threshold:.2f}"
            )
            expl: dict[str, Any] = {
                "statistic": "max(resid, maha, atoms), each / its held-out threshold at event_fpr/3",
                "resid": float(r[i]),
                "maha": float(m[i]),
                "atoms": float(a[i]),
                "margin": float(margin[i]) if np.isfinite(margin[i]) else None,
                "margin_low": self.margin_low if np.isfinite(self.margin_low) else None,
                "kind_rule": "adversarial if max(resid, atoms) >= maha and (maha <= 1 or margin < margin_low)",
                "top_features": [
                    {"feature": names[j] if j < len(names) else f"f{j}", "robust_z": float(row[j])}
                    for j in top.tolist()
                ],
                "subspace_dim": int(self._model.k),
                "reference_events": self.reference_events,
                "reference_period": list(self._ref_span),
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
            flagged.append(FlaggedEvent(eid, self.name, float(s[i]), self.threshold, reason, cid))
        return DetectorOutput(findings=tuple(findings), flagged=tuple(flagged))

    # ---------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "buffer": self._buf.state() if self._model is None else None,
            "model": self._model.state() if self._model is not None else None,
            "threshold": self.threshold,
            "margin_low": self.margin_low,
            "ref_span": list(self._ref_span),
            "n_scored": self.n_scored,
            "n_flagged": self.n_flagged,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        if state["model"] is None:
            self._model = None
            self._buf.load(state["buffer"])
        else:
            self._model = SubspaceModel.load(state["model"])
            self._buf.clear()
        self.threshold = float(state["threshold"])
        self.margin_low = float(state["margin_low"])
        self._ref_span = (float(state["ref_span"][0]), float(state["ref_span"][1]))
        self.n_scored = int(state["n_scored"])
        self.n_flagged = int(state["n_flagged"])
