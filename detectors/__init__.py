"""Online detectors for infersentry: drift (per model stream) and attacks (per event, per caller)."""

from __future__ import annotations

from detectors.base import (
    REGISTRY,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    FlaggedEvent,
    Kind,
    Severity,
    WindowStat,
    register,
)

__all__ = [
    "REGISTRY",
    "Detector",
    "DetectorContext",
    "DetectorOutput",
    "Finding",
    "FlaggedEvent",
    "Kind",
    "Severity",
    "WindowStat",
    "register",
]
