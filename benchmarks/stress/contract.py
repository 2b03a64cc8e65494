"""A small, independent check of generated lines against the prediction-log contract (v1).

Reads ``prediction-log.schema.json`` (no jsonschema dependency: the schema uses only ``type``, ``required``,
``oneOf``, ``minLength``/``maxLength``, ``items`` and ``additionalProperties``) and adds the prose rules of
``prediction-log.md``: no NaN/Infinity, non-empty features, probabilities summing to 1 within 0.02.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

#: The repository's copy of the shared contract's schema (``docs/contract/``), so the check runs in any checkout.
SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "contract" / "prediction-log.schema.json"
_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "object": dict,
          "array": list, "null": type(None)}


@cache
def schema() -> dict[str, Any]:
    """The contract's JSON schema."""
    return dict(json.loads(SCHEMA.read_text()))


def _is(value: Any, t: str) -> bool:
    if isinstance(value, bool) and t in ("number", "integer"):
        return False
    return isinstance(value, _TYPES[t])


def _check(value: Any, s: dict[str, Any], path: str) -> list[str]:
    if "oneOf" in s:
        ok = [sub for sub in s["oneOf"] if not _check(value, sub, path)]
        return [] if len(ok) == 1 else [f"{path}: matches {len(ok)} of oneOf"]
    errs: list[str] = []
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_is(value, t) for t in types):
            return [f"{path}: {type(value).__name__} is not {types}"]
    if isinstance(value, str):
        if len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", 1 << 30):
            errs.append(f"{path}: length {len(value)}")
    if isinstance(value, dict):
        errs += [f"{path}: missing {k}" for k in s.get("required", []) if k not in value]
        props = s.get("properties", {})
        extra = s.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs += _check(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                errs += _check(v, extra, f"{path}.{k}")
            elif extra is False:
                errs.append(f"{path}: unexpected {k}")
    if isinstance(value, list) and "items" in s:
        for i, v in enumerate(value):
            errs += _check(v, s["items"], f"{path}[{i}]")
    return errs


def _no_constants(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def validate_line(line: bytes) -> list[str]:
    """Contract violations of one prediction-log line (empty list: valid)."""
    try:
        obj = json.loads(line, parse_constant=_no_constants)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    errs = _check(obj, schema(), "$")
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
