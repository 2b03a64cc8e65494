"""Shared fixtures for the traffic generator tests: a few streams generated once per session."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.traffic import Traffic, generate

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "docs" / "contract" / "prediction-log.schema.json"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against the subset of JSON Schema the contract uses (no dependency)."""
    errs: list[str] = []
    if "oneOf" in schema:
        ok = [s for s in schema["oneOf"] if not schema_errors(value, s, path)]
        if len(ok) != 1:
            errs.append(f"{path}: matches {len(ok)} of oneOf")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [*errs, f"{path}: {value!r} is not {types}"]
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            errs.append(f"{path}: length {len(value)} out of bounds")
        if schema.get("format") == "date-time" and not _RFC3339.match(value):
            errs.append(f"{path}: {value!r} is not RFC 3339")
    if isinstance(value, dict):
        errs += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs += schema_errors(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                errs += schema_errors(v, extra, f"{path}.{k}")
            elif extra is False:
                errs.append(f"{path}: unexpected {k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += schema_errors(v, schema["items"], f"{path}[{i}]")
    return errs


@pytest.fixture(scope="session")
def contract_errors() -> Callable[[Any], list[str]]:
    """Validate one decoded message against the prediction-log JSON schema."""
    schema = json.loads(SCHEMA_PATH.read_text())
    return lambda message: schema_errors(message, schema)


@pytest.fixture(scope="session")
def mixed() -> Traffic:
    return generate("mixed", n_events=20000, seed=0)


@pytest.fixture(scope="session")
def mixed_digits() -> Traffic:
    return generate("mixed", n_events=12000, seed=3, dataset="digits")
