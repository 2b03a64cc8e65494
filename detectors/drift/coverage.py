"""A route whose windows never hold enough callers to be tested: say so once, as a ``data_quality`` notice.

The drift tests need ``min_effective_callers`` effective callers in a window: with fewer, a shift
cannot be told from a few callers' own behaviour, and the window is skipped. A route called by a
handful of backend services that each send their own name as ``client_id`` therefore gets no drift
test at all. Silence is the wrong answer to that; :class:`CoverageWatch` raises one notice when a
whole largest window's worth of closes went untested for that reason.

>>> watch = CoverageWatch(closes=3)
>>> [watch.observe(untested=u) for u in (True, True, False, True, True, True, True)]
[False, False, False, False, False, True, False]
"""

from __future__ import annotations

from typing import Any

from detectors.base import Finding, Kind, Severity


class CoverageWatch:
    """Counts consecutive untested closes; :meth:`observe` is ``True`` once, at the ``closes``-th."""

    def __init__(self, closes: int) -> None:
        self.closes = int(closes)
        self.run = 0
        self.noticed = False

    def observe(self, untested: bool) -> bool:
        self.run = self.run + 1 if untested else 0
        if self.run >= self.closes and not self.noticed:
            self.noticed = True
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {"run": self.run, "noticed": self.noticed}

    def load(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.run = int(state.get("run", 0))
        self.noticed = bool(state.get("noticed", False))


def coverage_notice(
    detector: str,
    config_hash: str,
    trigger: str,
    ts: float,
    window_start: float,
    effective: dict[int, float],
    required: float,
    callers: list[dict[str, Any]],
) -> Finding:
    """The ``data_quality`` notice: which windows were skipped, how many callers they held, what to do."""
    largest = max(effective)
    top = ", ".join(f"{c['client_id'] if c['client_id'] is not None else '(no client_id)'} {c['share']:.0%}"
                    for c in callers)
    summary = (
        f"drift tests inactive: the last {largest:,} events came from {effective[largest]:.1f} effective callers "
        f"(the tests need {required:g}); top senders {top}. Send end-user or session ids as client_id, or lower "
        f"min_effective_callers if these callers' traffic is known to be independent"
    )
    return Finding(
        kind=Kind.DATA_QUALITY,
        detector=f"{detector}.coverage",
        config_hash=config_hash,
        trigger_event_id=trigger,
        raised_at=ts,
        score=float(effective[largest]),
        threshold=float(required),
        severity=Severity.WARNING,
        explanation={
            "summary": summary,
            "effective_callers": {str(k): round(v, 2) for k, v in effective.items()},
            "required": float(required),
            "top_callers": callers,
        },
        window_start=window_start,
        window_end=ts,
    )
