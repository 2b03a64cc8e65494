from __future__ import annotations

from fakes import config, stream
from prometheus_client import generate_latest

from pipeline.engine import Engine
from pipeline.metrics import RunMetrics


def test_metrics_count_what_the_engine_did() -> None:
    result = Engine(config(), "r").process(stream(800))
    m = RunMetrics("r")
    m.observe(result)
    m.set_lag({("predictions", 0): 42})
    text = generate_latest(m.registry).decode()
    assert f'infersentry_events_total{{run="r"}} {float(result.events)}' in text
    assert f'infersentry_dead_letters_total{{run="r"}} {float(len(result.dead_letters))}' in text
    assert 'infersentry_consumer_lag{partition="0",run="r",topic="predictions"} 42.0' in text
    assert "infersentry_alerts_total" in text and result.alerts
