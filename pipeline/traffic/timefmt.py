"""Event-time helpers of the generator: the fixed default epoch; formatting is ``pipeline.timefmt``'s."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.timefmt import rfc3339_ms

#: Default start of simulated event time: 2026-01-01T00:00:00Z, as epoch seconds.
DEFAULT_START_TS: float = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

__all__ = ["DEFAULT_START_TS", "rfc3339_ms"]
