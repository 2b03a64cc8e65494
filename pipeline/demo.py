"""The demo: generate a realistic stream with a drift and attacks, replay it, compare with the truth."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import MonitorConfig
from pipeline.replay import ReplaySummary, replay_file
from pipeline.storage.store import Store
from pipeline.traffic import GroundTruth, generate, write_jsonl, write_truth


@dataclass(frozen=True)
class DemoReport:
    summary: ReplaySummary
    truth: GroundTruth
    predictions_path: Path
    labels_path: Path
    alerts: list[dict[str, Any]]
    prediction_ts: list[float]

    def events_between(self, start_ts: float, end_ts: float) -> int:
        """Prediction events with ``start_ts <= ts <= end_ts`` (a delay in events)."""
        return bisect_right(self.prediction_ts, end_ts) - bisect_left(self.prediction_ts, start_ts)

    @property
    def drift_alerts(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["kind"] == "drift"]

    @property
    def performance_alerts(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["kind"] == "performance"]

    @property
    def caller_alerts(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a["kind"] in ("attack_campaign", "extraction")]

    @property
    def flagged_callers(self) -> set[str]:
        return {a["client_id"] for a in self.caller_alerts if a["client_id"]}

    @property
    def caught_attackers(self) -> set[str]:
        return self.flagged_callers & set(self.truth.attacker_ids)

    @property
    def flagged_benign_callers(self) -> set[str]:
        return self.flagged_callers - set(self.truth.attacker_ids)


def run_demo(store: Store, workdir: Path, n_events: int = 30_000, seed: int = 7,
             on_batch: Callable[..., None] | None = None) -> DemoReport:
    """Generate the ``mixed`` scenario into ``workdir`` and replay it into ``store``."""
    workdir.mkdir(parents=True, exist_ok=True)
    traffic = generate("mixed", n_events=n_events, seed=seed)
    preds, labels = workdir / "predictions.jsonl.gz", workdir / "labels.jsonl.gz"
    write_jsonl(traffic, preds, labels)
    write_truth(traffic.truth, workdir / "truth.json")
    summary = replay_file(store, MonitorConfig(), preds, labels, on_batch=on_batch)
    ts = sorted(float(m["ts"]) for m in traffic.predictions)  # type: ignore[arg-type]
    return DemoReport(summary, traffic.truth, preds, labels, list(store.iter_alerts(summary.run)), ts)
