"""Event-time helpers: the fixed default epoch and RFC 3339 formatting (millisecond precision)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

#: Default start of simulated event time: 2026-01-01T00:00:00Z, as epoch seconds.
DEFAULT_START_TS: float = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def rfc3339_ms(ts: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with milliseconds and ``Z``.

    >>> rfc3339_ms(DEFAULT_START_TS + 1.25)
    '2026-01-01T00:00:01.250Z'
    """
    sec, milli = divmod(int(round(ts * 1000.0)), 1000)
    return f"{_second_prefix(sec)}.{milli:03d}Z"


@lru_cache(maxsize=4096)
def _second_prefix(sec: int) -> str:
    return f"{datetime.fromtimestamp(sec, tz=UTC):%Y-%m-%dT%H:%M:%S}"
