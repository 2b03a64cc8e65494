"""From detector findings to database rows, and from alert rows to the v1 export format."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from detectors.base import Finding, FlaggedEvent, WindowStat
from pipeline.events import RouteKey
from pipeline.timefmt import format_ts

#: Most evidence event ids kept on one alert (per-caller kinds); the first ones are kept.
MAX_EVIDENCE_EVENTS = 50
SIGNIFICANT_DIGITS = 10


def alert_id(config_hash: str, detector: str, model: str, model_version: str | None, kind: str,
             client_id: str | None, trigger_event_id: str) -> str:
    """Stable identity of an alert: the same input and config give the same id in any run.

    >>> a = alert_id("c0ffee", "drift", "m", None, "drift", None, "e42")
    >>> a == alert_id("c0ffee", "drift", "m", None, "drift", None, "e42"), len(a)
    (True, 32)
    """
    key = orjson.dumps([config_hash, detector, model, model_version, kind, client_id, trigger_event_id])
    return hashlib.sha256(key).hexdigest()[:32]


def num(x: float | None) -> float | None:
    """Round to 10 significant digits so stored and exported numbers are stable across databases."""
    if x is None:
        return None
    f = float(x)
    if not math.isfinite(f):
        return None
    return float(f"{f:.{SIGNIFICANT_DIGITS}g}")


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: numpy → Python, floats rounded (see :func:`_readable`), NaN/inf → null."""
    t = type(obj)  # exact built-in types first: the ABC check below is slow, and most values are these
    if t is str or obj is None:
        return obj
    if t is float:
        return _readable(obj) if math.isfinite(obj) else None
    if t is int:
        return obj
    if t is dict:
        return {str(k): clean_json(v) for k, v in obj.items()}
    if t is list:
        return [clean_json(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [clean_json(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return _readable(f) if math.isfinite(f) else None
    return obj if obj is None or isinstance(obj, str) else str(obj)


def _readable(f: float) -> float:
    """6 significant digits for statistics; large values (epoch-second timestamps, counts) keep
    their integer part and milliseconds instead, so times in explanations stay exact.

    >>> _readable(0.123456789), _readable(1795034566.1234)
    (0.123457, 1795034566.123)
    """
    return round(f, 3) if abs(f) >= 1e5 else float(f"{f:.6g}")


def dumps(obj: Any) -> str:
    return orjson.dumps(clean_json(obj), option=orjson.OPT_SORT_KEYS).decode()


def alert_row(run: str, route: RouteKey, f: Finding) -> dict[str, Any]:
    return {
        "run": run,
        "alert_id": alert_id(f.config_hash, f.detector, route.model, route.model_version, f.kind.value,
                             f.client_id, f.trigger_event_id),
        "kind": f.kind.value,
        "detector": f.detector,
        "model": route.model,
        "model_version": route.model_version,
        "partition": route.partition,
        "client_id": f.client_id,
        "raised_at": format_ts(f.raised_at),
        "raised_ts": num(f.raised_at),
        "trigger_event_id": f.trigger_event_id,
        "window_start": format_ts(f.window_start),
        "window_end": format_ts(f.window_end),
        "window_end_ts": num(f.window_end),
        "updated_at": format_ts(f.updated_at),
        "event_ids": dumps(list(f.event_ids[:MAX_EVIDENCE_EVENTS])),
        "score": num(f.score) if num(f.score) is not None else 0.0,
        "threshold": num(f.threshold),
        "severity": f.severity.value,
        "status": "open",
        "explanation": dumps({**f.explanation, "config_hash": f.config_hash}),
        "config_hash": f.config_hash,
    }


#: Columns an alert update may change; never status, raised_at or the trigger.
ALERT_UPDATE_COLUMNS = ("window_end", "window_end_ts", "updated_at", "event_ids", "score", "explanation")


def flagged_row(run: str, route: RouteKey, f: FlaggedEvent, ts: float, payload: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run": run,
        "event_id": f.event_id,
        "detector": f.detector,
        "model": route.model,
        "model_version": route.model_version,
        "partition": route.partition,
        "client_id": f.client_id,
        "ts": num(ts),
        "score": num(f.score) if num(f.score) is not None else 0.0,
        "threshold": num(f.threshold),
        "reason": f.reason,
        "payload": orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode(),
    }


def stat_row(run: str, route: RouteKey, s: WindowStat) -> dict[str, Any]:
    return {
        "run": run,
        "model": route.model,
        "model_version": route.model_version or "",
        "partition": route.partition,
        "detector": s.detector,
        "stat": s.stat,
        "window": s.window,
        "window_start": num(s.window_start),
        "window_end": num(s.window_end),
        "n": int(s.n),
        "location": num(s.location),
        "spread": num(s.spread),
        "score": num(s.score),
        "threshold": num(s.threshold),
    }


EXPORT_FIELDS = (
    "alert_id", "kind", "detector", "model", "model_version", "client_id", "raised_at", "trigger_event_id",
    "window_start", "window_end", "updated_at", "event_ids", "score", "threshold", "severity", "status",
    "explanation", "run",
)


def export_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One alert row as a v1 export object: keys in the contract's order, JSON columns decoded."""
    return {
        "alert_id": row["alert_id"],
        "kind": row["kind"],
        "detector": row["detector"],
        "model": row["model"],
        "model_version": row["model_version"],
        "client_id": row["client_id"],
        "raised_at": row["raised_at"],
        "trigger_event_id": row["trigger_event_id"],
        "window_start": row["window_start"],
        "window_end": row["window_end"],
        "updated_at": row["updated_at"],
        "event_ids": orjson.loads(row["event_ids"]),
        "score": num(row["score"]),
        "threshold": num(row["threshold"]),
        "severity": row["severity"],
        "status": row["status"],
        "explanation": orjson.loads(row["explanation"]),
        "run": row["run"],
    }


def export_line(row: Mapping[str, Any]) -> bytes:
    """One alert as a v1 export line: keys in the contract's order, numbers in shortest form."""
    return orjson.dumps(export_record(row)) + b"\n"
