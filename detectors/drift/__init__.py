"""Drift detectors: register ``drift`` (inputs, outputs, joint structure) and ``performance``."""

from __future__ import annotations

from detectors.drift.input_output import DriftDetector
from detectors.drift.performance import PerformanceDetector

__all__ = ["DriftDetector", "PerformanceDetector"]
