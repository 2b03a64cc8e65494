"""Realistic, deterministic prediction-log traffic for demos, tests and benchmarks.

>>> from pipeline.traffic import generate
>>> t = generate("mixed", n_events=2000, seed=1)
>>> len(t.predictions), t.truth.change_points[0].index
(2000, 1000)
"""

from __future__ import annotations

from pipeline.traffic.attacks import ATTACK_KINDS, Attacker
from pipeline.traffic.datasets import Dataset, get_dataset
from pipeline.traffic.drift import ConceptDrift, CorrelationDrift, CovariateDrift, Drift, PriorShift
from pipeline.traffic.generator import CHUNK, Traffic, TrafficPlan, generate, iter_events, plan
from pipeline.traffic.io import encode_message, write_jsonl, write_truth
from pipeline.traffic.model import SimModel, get_model
from pipeline.traffic.scenarios import SCENARIOS, Scenario, get_scenario
from pipeline.traffic.schedule import TrafficConfig
from pipeline.traffic.timefmt import DEFAULT_START_TS, rfc3339_ms
from pipeline.traffic.truth import AttackerTruth, ChangePoint, GroundTruth

__all__ = [
    "ATTACK_KINDS", "CHUNK", "DEFAULT_START_TS", "SCENARIOS",
    "Attacker", "AttackerTruth", "ChangePoint", "ConceptDrift", "CorrelationDrift", "CovariateDrift",
    "Dataset", "Drift", "GroundTruth", "PriorShift", "Scenario", "SimModel", "Traffic", "TrafficConfig",
    "TrafficPlan", "encode_message", "generate", "get_dataset", "get_model", "get_scenario", "iter_events",
    "plan", "rfc3339_ms", "write_jsonl", "write_truth",
]  # fmt: skip
