"""A small, independent check of generated lines against the prediction-log contract (v1).

Validates against ``prediction-log.schema.json`` with ``jsonschema`` and adds the prose rules of
``prediction-log.md``: no NaN/Infinity, non-empty features, probabilities summing to 1 within 0.02.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

#: The repository's copy of the shared contract's schema (``docs/contract/``), so the check runs in any checkout.
SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "contract" / "prediction-log.schema.json"


@cache
def schema() -> dict[str, Any]:
    """The contract's JSON schema."""
    return dict(json.loads(SCHEMA.read_text()))


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _check(value: Any) -> list[str]:
    """Schema violations of one decoded line, as ``$.path: message``."""
    return [f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(value)]


def _no_constants(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def validate_line(line: bytes) -> list[str]:
    """Contract violations of one prediction-log line (empty list: valid)."""
    try:
        obj = json.loads(line, parse_constant=_no_constants)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    errs = _check(obj)
    if errs or not isinstance(obj, dict):
        return errs
    if not obj["features"]:
        errs.append("$.features: empty")
    probs = obj.get("probabilities")
    if probs:
        total = sum(probs.values()) if isinstance(probs, dict) else sum(probs)
        if abs(total - 1.0) > 0.02:
            errs.append(f"$.probabilities: sum {total:.4f}")
    return errs
