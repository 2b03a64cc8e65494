"""One alert per episode: the life cycle shared by the stream-level detectors (``drift``, ``performance``).

An episode opens at the first window close whose statistic exceeds the threshold (one ``Finding`` at
that close's event), stays open while closes keep exceeding, and ends after ``quiet_windows``
consecutive quiet closes (one update ``Finding`` with the same trigger, ``window_end`` = last
exceeding close, ``updated_at`` = the ending close). Its state is a plain dict, for snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detectors.base import Finding, Kind, Severity


class EpisodeTracker:
    """Opens, extends and closes episodes; builds their findings.

    >>> t = EpisodeTracker(Kind.DRIFT, "drift", "c0ffee", threshold=3.0, quiet_windows=2)
    >>> opened = t.observe(4.0, 10.0, lambda: {"trigger": "e9", "window_start": 5.0, "explanation": {}})
    >>> opened.raised_at, t.observe(1.0, 11.0, dict), t.observe(1.0, 12.0, dict).updated_at
    (10.0, None, 12.0)
    """

    def __init__(
        self, kind: Kind, detector: str, config_hash: str, threshold: float, quiet_windows: int
    ) -> None:
        self.kind = kind
        self.detector = detector
        self.config_hash = config_hash
        self.threshold = float(threshold)
        self.quiet_windows = int(quiet_windows)
        self.episode: dict[str, Any] | None = None

    def observe(
        self, score: float, close_ts: float, describe: Callable[[], dict[str, Any]]
    ) -> Finding | None:
        """One window close. ``describe`` (called only when an episode opens) returns the
        ``trigger`` event id, the ``window_start`` ts and the ``explanation``."""
        exceeded = score > self.threshold
        ep = self.episode
        if ep is None:
            if not exceeded:
                return None
            self.episode = {
                **describe(),
                "raised_at": close_ts,
                "score": float(score),
                "last_exceed": close_ts,
                "quiet": 0,
            }
            return self._finding(self.episode, update=False)
        if exceeded:
            ep["quiet"], ep["last_exceed"] = 0, close_ts
            return None
        ep["quiet"] += 1
        if ep["quiet"] < self.quiet_windows:
            return None
        self.episode = None
        return self._finding(ep, update=True, ended_at=close_ts)

    def _finding(self, ep: dict[str, Any], update: bool, ended_at: float | None = None) -> Finding:
        explanation = dict(ep["explanation"])
        if update:
            explanation["episode"] = {
                "ended_at": ended_at,
                "last_exceedance": ep["last_exceed"],
                "quiet_windows": self.quiet_windows,
            }
        return Finding(
            kind=self.kind,
            detector=self.detector,
            config_hash=self.config_hash,
            trigger_event_id=ep["trigger"],
            raised_at=ep["raised_at"],
            score=float(ep["score"]),
            threshold=self.threshold,
            severity=Severity.CRITICAL if ep["score"] > 2 * self.threshold else Severity.WARNING,
            explanation=explanation,
            window_start=ep["window_start"],
            window_end=ep["last_exceed"] if update else ep["raised_at"],
            updated_at=ended_at,
            is_update=update,
        )

    def state(self) -> dict[str, Any] | None:
        return None if self.episode is None else dict(self.episode)

    def load(self, state: dict[str, Any] | None) -> None:
        self.episode = None if state is None else dict(state)
