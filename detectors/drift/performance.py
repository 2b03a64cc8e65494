"""``performance``: error-rate drift on joined outcomes (inline or delayed labels).

The first ``reference_size`` outcomes of the route give the reference error rate ``p0``. Every
``block_size`` outcomes a window closes and, for each length in ``window_sizes``, the window's
error rate is compared to ``p0`` with the signed root of the binomial likelihood ratio, whose
effective sample size includes the reference's own estimation error (``1/n = 1/L + 1/n_ref``).
The threshold is Bonferroni over window sizes and closes for ``context.events_between_false_alarms``
outcomes between false alarms (outcomes carry no caller, so they are treated as independent).
Episodes follow the ``drift`` detector: one finding at the first crossing, an update after
``quiet_windows`` quiet closes. Counts are integers, so results do not depend on batch cuts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from detectors.base import (
    EMPTY_OUTPUT,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    Kind,
    WindowStat,
    budget_explanation,
    register,
    with_rfc3339,
)
from detectors.drift._stats import normal_threshold, signed_root_binomial
from detectors.episodes import EpisodeTracker
from pipeline.events import EventBatch, OutcomeBatch


@register
class PerformanceDetector(Detector):
    """Change of the model's error rate against its reference period.

    Parameters
    ----------
    context : DetectorContext
        ``events_between_false_alarms`` is read as outcomes between false alarms.
    reference_size : int, default 1000
        Outcomes forming the reference error rate.
    block_size : int, default 50
        A window closes every ``block_size`` outcomes.
    window_sizes : tuple of int, default (100, 300, 1000)
        Window lengths in outcomes (multiples of ``block_size``).
    quiet_windows : int, default 5
        Quiet closes that end an episode.

    Examples
    --------
    >>> from detectors.base import DetectorContext
    >>> from pipeline.events import FeatureSchema, OutcomeBatch, RouteKey
    >>> rng = np.random.default_rng(0)
    >>> err = (rng.random(4000) < np.where(np.arange(4000) < 2500, 0.1, 0.25)).astype(float)
    >>> ctx = DetectorContext(RouteKey("m", "1"), FeatureSchema(("a",)))
    >>> det = PerformanceDetector(ctx)
    >>> ts = np.arange(4000.0)
    >>> out = det.process_outcomes(OutcomeBatch(ctx.route, [f"e{i}" for i in range(4000)], ts, ts, err))
    >>> out.findings[0].trigger_event_id
    'e2549'
    """

    name: ClassVar[str] = "performance"
    consumes: ClassVar[str] = "outcomes"
    state_version: ClassVar[int] = 1

    def __init__(
        self,
        context: DetectorContext,
        *,
        reference_size: int = 1000,
        block_size: int = 50,
        window_sizes: tuple[int, ...] | list[int] = (100, 300, 1000),
        quiet_windows: int = 5,
    ) -> None:
        ws = tuple(int(w) for w in window_sizes)
        super().__init__(
            context,
            reference_size=reference_size,
            block_size=block_size,
            window_sizes=list(ws),
            quiet_windows=quiet_windows,
        )
        if int(reference_size) < 100:
            raise ValueError(f"reference_size must be >= 100, got {reference_size}")
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not ws or any(w <= 0 or w % block_size for w in ws):
            raise ValueError(f"window_sizes must be positive multiples of block_size, got {ws}")
        if int(quiet_windows) < 1:
            raise ValueError(f"quiet_windows must be >= 1, got {quiet_windows}")
        if context.events_between_false_alarms <= 0:
            raise ValueError("context.events_between_false_alarms must be > 0")
        self.reference_size = int(reference_size)
        self.block_size = int(block_size)
        self.window_sizes = tuple(sorted(ws))
        self.quiet_windows = int(quiet_windows)
        self.threshold = normal_threshold(
            context.events_between_false_alarms, len(self.window_sizes) / self.block_size
        )
        self.n_ref = 0
        self.ref_err = 0
        self.ref_start = float("nan")
        self.ref_end = float("nan")
        self.n_mon = 0
        self.hist = np.empty(0, dtype=np.int8)
        self.hist_ts = np.empty(0, dtype=np.float64)
        self.episodes = EpisodeTracker(
            Kind.PERFORMANCE, self.name, self.config_hash, self.threshold, self.quiet_windows
        )

    def process(self, batch: EventBatch) -> DetectorOutput:  # pragma: no cover - outcomes only
        return EMPTY_OUTPUT

    def process_outcomes(self, batch: OutcomeBatch) -> DetectorOutput:
        n = len(batch)
        if n == 0:
            return EMPTY_OUTPUT
        err = (np.asarray(batch.error) > 0.5).astype(np.int8)
        ts = np.asarray(batch.ts, dtype=np.float64)
        start = 0
        if self.n_ref < self.reference_size:
            take = min(n, self.reference_size - self.n_ref)
            if self.n_ref == 0:
                self.ref_start = float(ts[0])
            self.ref_err += int(err[:take].sum())
            self.n_ref += take
            self.ref_end = float(ts[take - 1])
            start = take
            if start >= n:
                return EMPTY_OUTPUT
        nh = len(self.hist)
        e_all = np.concatenate([self.hist, err[start:]])
        t_all = np.concatenate([self.hist_ts, ts[start:]])
        ids = batch.event_ids[start:]
        cum = np.concatenate([[0], np.cumsum(e_all, dtype=np.int64)])
        n_before = self.n_mon - nh
        step = self.block_size
        first = (-n_before) % step
        ends = np.arange(first if first > 0 else step, len(e_all) + 1, step)
        ends = ends[ends > nh]
        p0 = float(np.clip(self.ref_err / self.n_ref, 0.5 / self.n_ref, 1 - 0.5 / self.n_ref))
        h = self.threshold
        findings: list[Finding] = []
        stats: list[WindowStat] = []
        big = max(self.window_sizes)
        for end in ends:
            e = int(end)
            n_here = n_before + e
            best, best_l, best_rate = 0.0, 0, 0.0
            for L in self.window_sizes:
                if n_here < L:
                    continue
                rate = (cum[e] - cum[e - L]) / L
                neff = 1.0 / (1.0 / L + 1.0 / self.n_ref)
                z = abs(float(signed_root_binomial(np.array([rate]), np.array([p0]), np.array([neff]))[0]))
                if z > best:
                    best, best_l, best_rate = z, L, rate
            close_ts = float(t_all[e - 1])

            def describe(
                e: int = e, best: float = best, best_l: int = best_l, best_rate: float = best_rate
            ) -> dict[str, Any]:
                return {
                    "trigger": ids[e - 1 - nh],
                    "window_start": float(t_all[e - best_l]),
                    "explanation": self._explain(best, best_l, best_rate, p0, h, step),
                }

            finding = self.episodes.observe(best, close_ts, describe)
            if finding is not None:
                findings.append(finding)
            if n_here % big == 0:
                rate = (cum[e] - cum[e - big]) / big
                stats.append(
                    WindowStat(
                        self.name,
                        "error_rate",
                        n_here // big - 1,
                        float(t_all[e - big]),
                        close_ts,
                        big,
                        float(rate),
                        None,
                        best,
                        h,
                    )
                )
        keep = min(len(e_all), big)
        self.hist = e_all[len(e_all) - keep :].copy()
        self.hist_ts = t_all[len(t_all) - keep :].copy()
        self.n_mon += n - start
        return DetectorOutput(findings=tuple(findings), stats=tuple(stats))

    def _explain(
        self, best: float, best_l: int, best_rate: float, p0: float, h: float, step: int
    ) -> dict[str, Any]:
        return {
            "summary": (
                f"error rate rose: {best_rate:.1%} vs reference {p0:.1%}; window {best_l} outcomes; "
                f"statistic {best:.2f} > threshold {h:.2f}"
                if best_rate >= p0
                else f"error rate fell: {best_rate:.1%} vs reference {p0:.1%}; window {best_l} "
                f"outcomes; statistic {best:.2f} > threshold {h:.2f}"
            ),
            "statistic": round(best, 4),
            "threshold": round(h, 4),
            "statistic_definition": "max over window sizes of |signed-root binomial LR|",
            "window_outcomes": best_l,
            "window_sizes": list(self.window_sizes),
            "top": [{"stat": "error_rate", "reference": round(p0, 6), "current": round(best_rate, 6)}],
            "reference_period": with_rfc3339({"start": self.ref_start, "end": self.ref_end, "n": self.n_ref}),
            "config_hash": self.config_hash,
            "events_between_false_alarms": self.context.events_between_false_alarms,
            "false_alarm_budget": budget_explanation(self.context),
            "calibration": {"method": "bonferroni", "tests_per_outcome": len(self.window_sizes) / step},
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "n_ref": self.n_ref,
            "ref_err": self.ref_err,
            "ref_start": self.ref_start,
            "ref_end": self.ref_end,
            "n_mon": self.n_mon,
            "hist": self.hist.copy(),
            "hist_ts": self.hist_ts.copy(),
            "episode": self.episodes.state(),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.n_ref = int(state["n_ref"])
        self.ref_err = int(state["ref_err"])
        self.ref_start = float(state["ref_start"])
        self.ref_end = float(state["ref_end"])
        self.n_mon = int(state["n_mon"])
        self.hist = np.asarray(state["hist"], dtype=np.int8)
        self.hist_ts = np.asarray(state["hist_ts"], dtype=np.float64)
        self.episodes.load(state["episode"])
