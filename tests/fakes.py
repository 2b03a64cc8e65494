"""Test doubles shared by pipeline tests: small deterministic detectors and a message stream."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from detectors.base import (
    REGISTRY,
    Detector,
    DetectorOutput,
    Finding,
    FlaggedEvent,
    Kind,
    Severity,
    WindowStat,
    register,
)
from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig
from pipeline.events import EventBatch, OutcomeBatch, RawMessage


class CountingDetector(Detector):
    """Flags every 5th event whose f0 exceeds 2 (stateful, so batch cuts and restores matter)."""

    name = "test_counting"

    def __init__(self, context: Any, **params: Any) -> None:
        super().__init__(context, **params)
        self.hits = 0
        self.seen = 0
        self.errors: list[float] = []

    def process(self, batch: EventBatch) -> DetectorOutput:
        findings, flagged, stats = [], [], []
        for i in range(len(batch)):
            self.seen += 1
            if batch.X[i, 0] > 2:
                self.hits += 1
                flagged.append(FlaggedEvent(batch.event_ids[i], self.name, float(batch.X[i, 0]), 2.0, "f0 high",
                                            batch.client_ids[i]))
                if self.hits % 5 == 0:
                    findings.append(Finding(Kind.OUTLIER, self.name, self.config_hash, batch.event_ids[i],
                                            float(batch.ts[i]), float(batch.X[i, 0]), 2.0, Severity.WARNING,
                                            {"hits": self.hits}, client_id=batch.client_ids[i],
                                            event_ids=(batch.event_ids[i],)))
            if self.seen % 100 == 0:
                stats.append(WindowStat(self.name, "f0", self.seen // 100, float(batch.ts[i]) - 99,
                                        float(batch.ts[i]), 100, float(batch.X[i, 0]), None, float(self.hits), None))
        return DetectorOutput(tuple(findings), tuple(flagged), tuple(stats))

    def process_outcomes(self, batch: OutcomeBatch) -> DetectorOutput:
        self.errors.extend(batch.error.tolist())
        if len(self.errors) >= 50 and len(self.errors) - len(batch) < 50:
            k = 49 - (len(self.errors) - len(batch))
            return DetectorOutput((Finding(Kind.PERFORMANCE, self.name, self.config_hash, batch.event_ids[k],
                                           float(batch.ts[k]), float(np.mean(self.errors[:50])), None,
                                           Severity.INFO, {}),))
        return DetectorOutput()

    def _get_state(self) -> dict[str, Any]:
        return {"hits": self.hits, "seen": self.seen, "errors": np.array(self.errors)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.hits, self.seen, self.errors = state["hits"], state["seen"], state["errors"].tolist()


if "test_counting" not in REGISTRY:
    register(CountingDetector)
CountingDetector.consumes = "events"


class OutcomeView(Detector):
    name = "test_outcomes"
    consumes = "outcomes"

    def process_outcomes(self, batch: OutcomeBatch) -> DetectorOutput:
        return CountingDetector.process_outcomes(self, batch)  # type: ignore[arg-type]

    def __init__(self, context: Any, **params: Any) -> None:
        super().__init__(context, **params)
        self.errors: list[float] = []

    def _get_state(self) -> dict[str, Any]:
        return {"errors": np.array(self.errors)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.errors = state["errors"].tolist()


if "test_outcomes" not in REGISTRY:
    register(OutcomeView)


def config(**kw: Any) -> MonitorConfig:
    dets = {"test_counting": DetectorSpec(), "test_outcomes": DetectorSpec()}
    kw.setdefault("early_label_wait_seconds", 60.0)  # the stream spans 3,000 s
    kw.setdefault("unmatched_labels_alert_at", 3)
    return MonitorConfig(defaults=ModelConfig(detectors=dets), **kw)


def stream(n: int = 3000, seed: int = 0) -> list[RawMessage]:
    rng = np.random.default_rng(seed)
    msgs: list[RawMessage] = []
    off = {"predictions": 0, "labels": 0}

    def add(stream: str, obj: Any) -> None:
        value = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        msgs.append(RawMessage(stream, f"t-{stream}", 0, off[stream], value))
        off[stream] += 1

    for i in range(n):
        ev = {"event_id": f"e{i}", "ts": 1000.0 + i, "model": "m" if i % 7 else "m2", "client_id": f"c{i % 13}",
              "features": [float(rng.normal(0, 1.5)), float(rng.normal())], "prediction": str(i % 3),
              "probabilities": [0.5, 0.3, 0.2]}
        if i % 11 == 0:
            ev["label"] = str(i % 2)
        add("predictions", ev)
        if i % 97 == 5:
            add("predictions", ev)  # redelivery
        if i % 333 == 7:
            add("predictions", b'{"event_id": "broken", "ts": NaN}')
        if i % 5 == 0 and i > 10:
            add("labels", {"event_id": f"e{i - 10}", "ts": 1000.0 + i, "label": str(i % 3)})
        if i % 400 == 9:
            add("labels", {"event_id": f"nope{i}", "ts": 1000.0 + i, "label": "1"})
        if i == 1500:
            add("predictions", {**ev, "event_id": "odd", "features": [1.0, 2.0, 3.0]})
    return msgs
