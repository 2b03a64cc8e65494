"""Drift detectors: register ``drift`` (inputs, outputs, joint structure) and ``performance``."""

from __future__ import annotations

from detectors.drift.input_output import DriftDetector

__all__ = ["DriftDetector"]
