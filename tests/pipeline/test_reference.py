from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DetectorSpec, ModelConfig, MonitorConfig
from pipeline.engine import Engine
from pipeline.events import RawMessage
from pipeline.reference import ReferenceFileError
from pipeline.traffic import encode_message, generate, write_jsonl


def _messages(predictions: list[dict[str, object]]) -> list[RawMessage]:
    return [RawMessage("predictions", "p", 0, i, encode_message(m)) for i, m in enumerate(predictions)]


def test_reference_file_lets_drift_monitor_from_the_first_event(tmp_path: Path) -> None:
    ref = generate("benign", n_events=3000, seed=1)
    write_jsonl(ref, tmp_path / "ref.jsonl.gz")
    live = generate("drift-abrupt", n_events=4000, seed=2)
    drift_only = {"drift": DetectorSpec()}
    with_file = MonitorConfig(defaults=ModelConfig(detectors=drift_only, reference_file=str(tmp_path / "ref.jsonl.gz")))
    without = MonitorConfig(defaults=ModelConfig(detectors=drift_only))
    msgs = _messages(live.predictions)
    eng_a, eng_b = Engine(with_file, "r"), Engine(without, "r")
    a, b = eng_a.process(msgs), eng_b.process(msgs)
    # with the file every window is monitored from the start; without it the first 2,000 events are reference
    assert min(s["window_end"] for s in a.stats) < min(s["window_end"] for s in b.stats)
    change = live.truth.change_points[0].ts
    drift = [x for x in a.alerts if x["kind"] == "drift"]
    assert drift and min(x["raised_ts"] for x in drift) >= change
    (route_a,) = eng_a.scope(0).routes.values()
    (route_b,) = eng_b.scope(0).routes.values()
    assert route_a.detectors[0].config_hash != route_b.detectors[0].config_hash  # alert ids follow the file
    assert np.isfinite([s["window_end"] for s in a.stats]).all()


def test_missing_reference_file_is_a_clear_error(tmp_path: Path) -> None:
    cfg = MonitorConfig(defaults=ModelConfig(detectors={"drift": DetectorSpec()}, reference_file=str(tmp_path / "x")))
    msgs = _messages(generate("benign", n_events=10, seed=1).predictions)
    with pytest.raises(ReferenceFileError, match="reference file not found"):
        Engine(cfg, "r").process(msgs)


def test_reference_time_range_selects_the_period(tmp_path: Path) -> None:
    """A reference period given as a time range of an archived log: only those events form it."""
    log = generate("drift-abrupt", n_events=6000, seed=3)
    write_jsonl(log, tmp_path / "log.jsonl")
    change = log.truth.change_points[0].ts
    msgs = _messages(log.predictions)

    def drift_alerts(**ref: object) -> list[dict[str, object]]:
        cfg = MonitorConfig(defaults=ModelConfig(detectors={"drift": DetectorSpec()},
                                                 reference_file=str(tmp_path / "log.jsonl"), **ref))
        return [a for a in Engine(cfg, "r").process(msgs).alerts if a["kind"] == "drift"]

    before = drift_alerts(reference_end=change)  # the period before the change: the drift is found after it
    assert before and min(float(str(a["raised_ts"])) for a in before) >= change
    after = drift_alerts(reference_start=change)  # "normal" = after the change: the old regime is the anomaly
    assert after and min(float(str(a["raised_ts"])) for a in after) < change
    with pytest.raises(ReferenceFileError, match="no valid events"):
        drift_alerts(reference_start=change + 10**7)


def test_reference_range_needs_a_file_and_an_order() -> None:
    with pytest.raises(ValueError, match="set reference_file"):
        ModelConfig(reference_start="2026-11-26T00:00:00Z")
    with pytest.raises(ValueError, match="must be before"):
        ModelConfig(reference_file="x", reference_start=20.0, reference_end=10.0)
    with pytest.raises(ValueError, match="reference_end"):
        ModelConfig(reference_file="x", reference_end="yesterday")
    assert ModelConfig(reference_file="x", reference_start="1970-01-01T00:00:10Z").reference_range() == (10.0, float("inf"))
