"""Shared fixtures for the traffic generator tests: a few streams generated once per session."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.traffic import Traffic, generate

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "docs" / "contract" / "prediction-log.schema.json"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Violations of ``value`` against the contract schema (``jsonschema``), plus RFC 3339 for ``date-time``
    strings (``jsonschema`` checks formats only with extra packages)."""
    errs = [f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(value)]
    ts = value.get("ts") if isinstance(value, dict) else None
    if isinstance(ts, str) and not _RFC3339.match(ts):
        errs.append(f"$.ts: {ts!r} is not RFC 3339")
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
