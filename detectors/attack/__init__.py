"""Attack detectors: per-event outliers, per-caller attack campaigns and model extraction."""

from __future__ import annotations

from detectors.attack.campaign import CampaignDetector
from detectors.attack.extraction import ExtractionDetector
from detectors.attack.outlier import OutlierDetector

__all__ = ["CampaignDetector", "ExtractionDetector", "OutlierDetector"]
