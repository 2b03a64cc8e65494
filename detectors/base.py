"""The one small protocol every online detector follows.

A detector is built from keyword parameters plus a :class:`DetectorContext` (route, feature
schema, seed, false-alarm budget). It is fed micro-batches, scores each event *before* it learns
from it, and returns an immutable :class:`DetectorOutput`. Its state is explicit:
``state_dict()`` / ``load_state_dict()`` carry a schema version and the config hash, and a
mismatched snapshot fails loudly.

Determinism rules: time comes from event timestamps only, randomness from ``context.seed``, and
results never depend on where the stream was cut into batches.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from pipeline.events import EventBatch, FeatureSchema, OutcomeBatch, RouteKey
from pipeline.timefmt import rfc3339_ms


class Kind(StrEnum):
    DRIFT = "drift"
    PERFORMANCE = "performance"
    ADVERSARIAL = "adversarial"
    OUTLIER = "outlier"
    ATTACK_CAMPAIGN = "attack_campaign"
    EXTRACTION = "extraction"
    DATA_QUALITY = "data_quality"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a detector wants a reviewer to see; becomes (or updates) one alert.

    ``raised_at`` is the event time of ``trigger_event_id`` (never a batch end, never the wall
    clock). ``is_update`` marks a later change to an alert raised earlier with the same trigger
    (for example a drift episode ending moves ``window_end`` and sets ``updated_at``).
    ``explanation`` must be JSON-serialisable.
    """

    kind: Kind
    detector: str
    config_hash: str
    trigger_event_id: str
    raised_at: float
    score: float
    threshold: float | None
    severity: Severity
    explanation: Mapping[str, Any]
    client_id: str | None = None
    window_start: float | None = None
    window_end: float | None = None
    updated_at: float | None = None
    event_ids: tuple[str, ...] = ()
    is_update: bool = False


@dataclass(frozen=True, slots=True)
class FlaggedEvent:
    """One event a detector scored above its threshold (stored with its payload)."""

    event_id: str
    detector: str
    score: float
    threshold: float | None
    reason: str
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class WindowStat:
    """One point of a per-window time series (what dashboards plot).

    ``stat`` names the statistic, e.g. ``"feature:f3"``, ``"confidence"``, ``"multivariate"``.
    ``window`` is the window's index within the route (a deterministic counter).
    """

    detector: str
    stat: str
    window: int
    window_start: float
    window_end: float
    n: int
    location: float | None
    spread: float | None
    score: float | None
    threshold: float | None


@dataclass(frozen=True, slots=True)
class DetectorOutput:
    findings: tuple[Finding, ...] = ()
    flagged: tuple[FlaggedEvent, ...] = ()
    stats: tuple[WindowStat, ...] = ()

    @staticmethod
    def merge(outputs: list[DetectorOutput]) -> DetectorOutput:
        return DetectorOutput(
            findings=tuple(f for o in outputs for f in o.findings),
            flagged=tuple(f for o in outputs for f in o.flagged),
            stats=tuple(s for o in outputs for s in o.stats),
        )


EMPTY_OUTPUT = DetectorOutput()


@dataclass(frozen=True, slots=True)
class DetectorContext:
    """What the pipeline tells a detector about where it runs.

    ``events_between_false_alarms`` is this detector's share of its model's false-alarm budget
    (expected events between false alarms); ``event_fpr`` is the per-event false-positive budget
    for detectors that flag single events.
    """

    route: RouteKey
    schema: FeatureSchema
    seed: int = 0
    events_between_false_alarms: float = 1e7
    event_fpr: float = 1e-3
    extra: Mapping[str, Any] = field(default_factory=dict)


def budget_explanation(context: DetectorContext) -> dict[str, Any]:
    """The false-alarm budget as a stream-level alert states it: the model's, and this detector's share.

    The pipeline splits a model's budget among its stream-level detectors (``extra`` carries the
    model's budget and how many share it), so each is calibrated to a budget that many times longer.

    >>> ctx = DetectorContext(RouteKey("m", "1"), FeatureSchema(("x",)), events_between_false_alarms=2e7,
    ...                       extra={"model_events_between_false_alarms": 1e7, "stream_detectors": 2})
    >>> budget_explanation(ctx)["this_detector"]
    20000000.0
    """
    share = float(context.events_between_false_alarms)
    model = float(context.extra.get("model_events_between_false_alarms", share))
    shared_by = int(context.extra.get("stream_detectors", 1))
    return {
        "model": model, "this_detector": share, "shared_by_detectors": shared_by,
        "meaning": f"expected events between false alarms: {model:.3g} for the model's {shared_by} stream-level "
                   f"detector(s) together, so {share:.3g} for this one",
    }


def time_at(ts: float) -> str | None:
    """Epoch seconds as RFC 3339 (as alert timestamps are written), ``None`` when not finite."""
    return rfc3339_ms(float(ts)) if math.isfinite(ts) else None


def with_rfc3339(period: Mapping[str, Any]) -> dict[str, Any]:
    """A period with epoch ``start``/``end`` plus the same times as RFC 3339 (``start_at``/``end_at``)."""
    out = dict(period)
    for key in ("start", "end"):
        value = out.get(key)
        if isinstance(value, int | float):
            out[f"{key}_at"] = time_at(value)
    return out


class StateMismatchError(ValueError):
    """A snapshot does not belong to this detector (other detector, version or config)."""


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of ``obj``'s canonical JSON form (sorted keys, no whitespace).

    >>> stable_hash({"b": 1, "a": [1.5, "x"]}) == stable_hash({"a": [1.5, "x"], "b": 1})
    True
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class Detector:
    """Base class: stores hyper-parameters as given, hashes them, wraps state with a version.

    Subclasses set ``name``, ``consumes`` (``"events"`` or ``"outcomes"``) and ``state_version``;
    accept their hyper-parameters as keyword arguments and pass them to ``super().__init__``;
    implement ``process`` and ``_get_state``/``_set_state``.
    """

    name: ClassVar[str] = "detector"
    consumes: ClassVar[str] = "events"
    state_version: ClassVar[int] = 1

    def __init__(self, context: DetectorContext, **params: Any) -> None:
        self.context = context
        self.params: dict[str, Any] = dict(params)
        self.config_hash = stable_hash(
            {
                "detector": self.name,
                "state_version": self.state_version,
                "params": self.params,
                "budget": context.events_between_false_alarms,
                "event_fpr": context.event_fpr,
                "seed": context.seed,
            }
        )

    # -- processing -----------------------------------------------------------------------
    def process(self, batch: EventBatch) -> DetectorOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def process_outcomes(self, batch: OutcomeBatch) -> DetectorOutput:  # pragma: no cover
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Snapshot: JSON-like values and numpy arrays only (see ``pipeline.statecodec``)."""
        return {
            "detector": self.name,
            "state_version": self.state_version,
            "config_hash": self.config_hash,
            "state": self._get_state(),
        }

    def load_state_dict(self, snapshot: dict[str, Any]) -> None:
        for key in ("detector", "state_version", "config_hash"):
            mine = getattr(self, "name" if key == "detector" else key)
            if snapshot.get(key) != mine:
                raise StateMismatchError(
                    f"{self.name}: snapshot {key}={snapshot.get(key)!r} does not match {mine!r}"
                )
        self._set_state(snapshot["state"])


REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available to configs under ``cls.name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"detector name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls
