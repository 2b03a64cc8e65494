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
