"""The demo finds what it injected, and nothing on its benign callers."""

from __future__ import annotations

from pathlib import Path

from pipeline.demo import run_demo
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store


def test_demo_finds_the_drift_and_the_attackers_only(tmp_path: Path) -> None:
    report = run_demo(Store(make_engine(f"sqlite:///{tmp_path}/demo.db")), tmp_path / "demo")
    truth = report.truth
    change = truth.change_points[0]
    assert report.drift_alerts, "no drift alert"
    first_drift = min(a["raised_ts"] for a in report.drift_alerts)
    assert first_drift >= change.ts, "drift alert before the change point"
    assert truth.attacker_ids and report.caught_attackers == set(truth.attacker_ids)
    assert report.flagged_benign_callers == set()
    for a in report.caller_alerts:
        attacker = truth.attacker(a["client_id"])
        assert a["raised_ts"] >= attacker.first_ts
