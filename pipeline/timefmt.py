"""Event-time parsing and formatting (RFC 3339, UTC, millisecond precision)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache

#: Epoch seconds accepted for ``ts``: 1970-01-01 up to (not including) year 3000.
MAX_EPOCH = 32503680000.0


class TimestampError(ValueError):
    pass


def parse_ts(value: object) -> tuple[float, bool]:
    """Parse a contract ``ts`` into (epoch seconds, was_naive).

    A string without a UTC offset is read as UTC and reported as naive.

    >>> parse_ts("2026-11-26T06:33:34.120Z")
    (1795674814.12, False)
    >>> parse_ts("2026-11-26T06:33:34")[1]
    True
    >>> parse_ts(1795674814.12)
    (1795674814.12, False)
    """
    if isinstance(value, bool):
        raise TimestampError("ts must be an RFC 3339 string or epoch seconds, not a boolean")
    if isinstance(value, int | float):
        ts = float(value)
        if not math.isfinite(ts) or ts < 0 or ts >= MAX_EPOCH:
            raise TimestampError(f"ts {value!r} is out of range for epoch seconds")
        return ts, False
    if not isinstance(value, str):
        raise TimestampError(f"ts must be an RFC 3339 string or epoch seconds, got {type(value).__name__}")
    fast = _parse_utc_fast(value)
    if fast is not None:
        return fast, False
    if not (19 <= len(value) <= 40) or value[4:5] != "-" or value[10:11] not in ("T", "t", " "):
        raise TimestampError(f"ts {value[:40]!r} is not an RFC 3339 date-time")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise TimestampError(f"ts {value[:40]!r} is not an RFC 3339 date-time") from None
    naive = dt.tzinfo is None
    if naive:
        dt = dt.replace(tzinfo=UTC)
    ts = dt.timestamp()
    if ts < 0 or ts >= MAX_EPOCH:
        raise TimestampError(f"ts {value!r} is out of range")
    return round(ts, 6), naive


def _parse_utc_fast(value: str) -> float | None:
    """``YYYY-MM-DDTHH:MM:SS[.fraction]Z``, the common form, without building a datetime per event."""
    n = len(value)
    if n < 20 or value[-1] != "Z" or value[10] != "T" or (n > 20 and value[19] != "."):
        return None
    base = _second_epoch(value[:19])
    if base is None:
        return None
    if n == 20:
        return float(base)
    frac = value[20:-1]
    if not (1 <= len(frac) <= 9 and frac.isdigit() and frac.isascii()):
        return None
    micros = frac[:6]  # like datetime.fromisoformat: microsecond resolution, extra digits dropped
    return round(base + int(micros) / 10 ** len(micros), 6)


@lru_cache(maxsize=8192)
def _second_epoch(prefix: str) -> int | None:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM:SS`` read as UTC, or None if it is not such a date-time."""
    if not (prefix[:4].isdigit() and prefix.isascii()):
        return None
    try:
        dt = datetime.fromisoformat(prefix).replace(tzinfo=UTC)
    except ValueError:
        return None
    ts = dt.timestamp()
    if ts < 0 or ts >= MAX_EPOCH:
        return None
    return int(ts)


def format_ts(ts: float | None) -> str | None:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds; sorts as text).

    >>> format_ts(1795674814.12)
    '2026-11-26T06:33:34.120Z'
    """
    if ts is None:
        return None
    return rfc3339_ms(ts)


def rfc3339_ms(ts: float) -> str:
    """:func:`format_ts` for a value known not to be ``None``."""
    sec, milli = divmod(int(round(ts * 1000.0)), 1000)
    return f"{_second_prefix(sec)}.{milli:03d}Z"


@lru_cache(maxsize=4096)
def _second_prefix(sec: int) -> str:
    return f"{datetime.fromtimestamp(sec, tz=UTC):%Y-%m-%dT%H:%M:%S}"


def parse_time_ms(text: str) -> int:
    """A command-line time as epoch milliseconds: RFC 3339 (no offset = UTC) or epoch milliseconds.

    >>> parse_time_ms("2026-11-18T12:00:00Z"), parse_time_ms("1795003200000")
    (1795003200000, 1795003200000)
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        seconds, _ = parse_ts(value)
    except TimestampError as exc:
        raise TimestampError(f"{text!r} is neither RFC 3339 (2026-11-18T12:00:00Z) nor epoch milliseconds") from exc
    return int(round(seconds * 1000.0))
