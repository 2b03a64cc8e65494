"""Render the SQL of a Grafana dashboard the way Grafana would, so it can run outside Grafana.

Grafana turns a panel's ``rawSql`` into the SQL it sends to PostgreSQL in two steps, and
:func:`render` does the same two steps in the same order:

1. **Template variables** (done by Grafana's frontend). ``$name``, ``${name}``, ``${name:fmt}``
   and ``[[name]]`` are replaced by the variable's current value(s):

   - a variable that is neither multi-value nor has an "All" option gives its value as-is, with
     single quotes doubled (so the SQL writes ``'$run'``);
   - a multi-value or include-All variable gives every selected value as a quoted literal,
     comma-separated (so the SQL writes ``IN ($model)``); "All" without a custom all-value
     selects every option;
   - formats ``csv``, ``raw``, ``singlequote``/``sqlstring`` and ``doublequote`` are supported;
   - built-ins: ``$__interval`` (e.g. ``5m``), ``$__interval_ms``, ``$__range_s``, ``$__from`` /
     ``$__to`` (epoch milliseconds). ``$__macro(...)`` calls are left for step 2.

2. **Macros** (done by Grafana's PostgreSQL backend). With the dashboard time range
   ``[from, to]``:

   ===============================  ==================================================
   ``$__time(c)``                   ``c AS "time"``
   ``$__timeEpoch(c)``              ``extract(epoch from c) AS "time"``
   ``$__timeFilter(c)``             ``c BETWEEN '<from RFC 3339>' AND '<to RFC 3339>'``
   ``$__timeFrom()``                ``'<from RFC 3339>'``
   ``$__timeTo()``                  ``'<to RFC 3339>'``
   ``$__timeGroup(c, 5m)``          ``floor(extract(epoch from c)/300)*300``
   ``$__timeGroupAlias(c, 5m)``     the same ``AS "time"``
   ``$__unixEpochFilter(c)``        ``c >= <from s> AND c <= <to s>`` (integer seconds,
                                    which is what Grafana emits; equal to a BETWEEN)
   ``$__unixEpochNanoFilter(c)``    the same in nanoseconds
   ``$__unixEpochFrom()``           ``<from s>``
   ``$__unixEpochTo()``             ``<to s>``
   ``$__unixEpochGroup(c, 5m)``     ``floor(c/300)*300``
   ``$__unixEpochGroupAlias(..)``   the same ``AS "time"``
   ===============================  ==================================================

   The optional fill argument of the group macros is accepted and ignored (it changes how
   Grafana post-processes results, not the SQL).

Anything else is an error here (an unknown variable or macro), even where Grafana would pass it
through silently, so that a typo in a dashboard fails a test instead of an on-call shift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "TimeRange",
    "VarValue",
    "PanelQuery",
    "render",
    "parse_interval",
    "format_interval",
    "load_dashboard",
    "iter_queries",
    "variable_queries",
    "resolve_variables",
    "RenderError",
]


class RenderError(ValueError):
    """The SQL uses a variable or macro that cannot be rendered."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The dashboard's time picker, in epoch seconds."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.start <= self.end:
            raise ValueError(f"time range start {self.start} is after its end {self.end}")


@dataclass(frozen=True, slots=True)
class VarValue:
    """The current selection of a template variable.

    ``quoted`` is true for multi-value and include-All variables: Grafana then renders every
    value as a quoted SQL literal. ``values`` may hold one or several values.
    """

    values: tuple[str, ...]
    quoted: bool = False

    @staticmethod
    def single(value: str) -> VarValue:
        return VarValue((value,), quoted=False)

    @staticmethod
    def multi(values: Iterable[str]) -> VarValue:
        return VarValue(tuple(values), quoted=True)


# -- step 1: template variables -------------------------------------------------------------------

# Grafana's own variable syntax: $name | [[name]] / [[name:fmt]] | ${name} / ${name:fmt}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


def parse_interval(text: str) -> float:
    """``'5m'`` → ``300.0`` seconds (Grafana interval syntax; a bare number means seconds)."""
    m = re.fullmatch(r"\s*'?(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)?'?\s*", text)
    if not m:
        raise RenderError(f"not a Grafana interval: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def format_interval(seconds: float) -> str:
    """``300`` → ``'5m'``: the largest whole unit, like Grafana's ``$__interval``."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{int(seconds)}s"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(name: str, var: VarValue, fmt: str | None) -> str:
    values = var.values
    if fmt is None:
        if var.quoted:
            return ",".join(_quote(v) for v in values)
        if len(values) != 1:
            raise RenderError(f"single-value variable ${name} has {len(values)} values")
        return values[0].replace("'", "''")
    if fmt in ("singlequote", "sqlstring"):
        return ",".join(_quote(v) for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "raw":
        return ",".join(values)
    raise RenderError(f"unsupported variable format ${{{name}:{fmt}}}")


def _substitute_variables(
    sql: str, variables: Mapping[str, VarValue], time_range: TimeRange, interval_s: float
) -> str:
    builtins = {
        "__interval": format_interval(interval_s),
        "__interval_ms": str(int(round(interval_s * 1000))),
        "__range_s": str(int(time_range.end) - int(time_range.start)),
        "__from": str(int(time_range.start * 1000)),
        "__to": str(int(time_range.end * 1000)),
    }

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        if name in builtins and fmt is None:
            return builtins[name]
        if name.startswith("__"):
            if m.group(1) and fmt is None:
                return m.group(0)  # a macro (or unknown built-in): step 2 decides
            raise RenderError(f"unsupported built-in variable {m.group(0)}")
        if name not in variables:
            raise RenderError(f"unknown template variable {m.group(0)}")
        return _format(name, variables[name], fmt)

    return _VARIABLE.sub(replace, sql)


# -- step 2: macros -----------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_args(text: str) -> list[str]:
    """Split macro arguments on top-level commas (parentheses and quotes may nest)."""
    args: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
    last = text[start:].strip()
    if last or args:
        args.append(last)
    return args


_Macro = tuple[int, int, Callable[[list[str]], str]]  # required args, optional args, expansion


def _macros(time_range: TimeRange) -> dict[str, _Macro]:
    t0, t1 = int(time_range.start), int(time_range.end)

    def group(args: list[str], epoch: bool) -> str:
        step = f"{parse_interval(args[1]):g}"
        col = args[0] if epoch else f"extract(epoch from {args[0]})"
        return f"floor({col}/{step})*{step}"

    return {
        "time": (1, 0, lambda a: f'{a[0]} AS "time"'),
        "timeEpoch": (1, 0, lambda a: f'extract(epoch from {a[0]}) AS "time"'),
        "timeFilter": (1, 0, lambda a: f"{a[0]} BETWEEN '{_iso(t0)}' AND '{_iso(t1)}'"),
        "timeFrom": (0, 0, lambda a: f"'{_iso(t0)}'"),
        "timeTo": (0, 0, lambda a: f"'{_iso(t1)}'"),
        "timeGroup": (2, 1, lambda a: group(a, epoch=False)),
        "timeGroupAlias": (2, 1, lambda a: group(a, epoch=False) + ' AS "time"'),
        "unixEpochFilter": (1, 0, lambda a: f"{a[0]} >= {t0} AND {a[0]} <= {t1}"),
        "unixEpochNanoFilter": (1, 0, lambda a: f"{a[0]} >= {t0 * 10**9} AND {a[0]} <= {t1 * 10**9}"),
        "unixEpochFrom": (0, 0, lambda a: str(t0)),
        "unixEpochTo": (0, 0, lambda a: str(t1)),
        "unixEpochGroup": (2, 1, lambda a: group(a, epoch=True)),
        "unixEpochGroupAlias": (2, 1, lambda a: group(a, epoch=True) + ' AS "time"'),
    }


_MACRO = re.compile(r"\$__(\w+)\(")


def _expand_macros(sql: str, time_range: TimeRange) -> str:
    table = _macros(time_range)
    out: list[str] = []
    pos = 0
    while True:
        m = _MACRO.search(sql, pos)
        if not m:
            out.append(sql[pos:])
            break
        name = m.group(1)
        if name not in table:
            raise RenderError(f"unknown macro $__{name}")
        depth, i = 1, m.end()
        while i < len(sql) and depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        if depth:
            raise RenderError(f"unbalanced parentheses in $__{name}(")
        args = _split_args(sql[m.end() : i - 1])
        n_required, n_optional, expand = table[name]
        if not n_required <= len(args) <= n_required + n_optional or not all(args[:n_required]):
            raise RenderError(f"$__{name} takes {n_required} argument(s), got {args!r}")
        out.append(sql[pos : m.start()])
        out.append(expand(args))
        pos = i
    result = "".join(out)
    leftover = re.search(r"\$__\w+", result)
    if leftover:
        raise RenderError(f"unknown macro or built-in {leftover.group(0)}")
    return result


def render(
    sql: str,
    time_range: TimeRange,
    variables: Mapping[str, VarValue] | None = None,
    interval_s: float = 60.0,
) -> str:
    """The SQL Grafana would send for ``sql`` (see the module docstring for the rules)."""
    return _expand_macros(_substitute_variables(sql, variables or {}, time_range, interval_s), time_range)


# -- dashboards -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """One SQL query of a dashboard: a panel target, a template variable or an annotation."""

    dashboard: str  # dashboard uid
    where: str  # "panel", "variable" or "annotation"
    title: str  # panel title, variable name or annotation name
    ref_id: str
    sql: str
    format: str  # "table" or "time_series"
    panel: Mapping[str, Any] | None = None


def load_dashboard(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            sql = var["query"] if isinstance(var["query"], str) else var["query"].get("rawSql", "")
            out.append(PanelQuery(dashboard["uid"], "variable", var["name"], "var", sql, "table"))
    return out


def iter_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every SQL query of a dashboard: template variables, annotations, then panel targets."""
    uid = dashboard["uid"]
    out = variable_queries(dashboard)
    for ann in dashboard.get("annotations", {}).get("list", []):
        target = ann.get("target") or {}
        if target.get("rawSql"):
            out.append(PanelQuery(uid, "annotation", ann["name"], target.get("refId", "Anno"),
                                  target["rawSql"], "table"))
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            out.append(
                PanelQuery(uid, "panel", panel.get("title", ""), target.get("refId", "A"),
                           target.get("rawSql", ""), target.get("format", "table"), panel)
            )
    return out


def resolve_variables(
    dashboard: Mapping[str, Any],
    run_query: Callable[[str], Sequence[Sequence[Any]]],
    time_range: TimeRange,
    overrides: Mapping[str, str | Sequence[str]] | None = None,
    interval_s: float = 60.0,
) -> dict[str, VarValue]:
    """Choose every template variable's value the way Grafana does on a fresh dashboard load.

    Variables are resolved in order (later ones may use earlier ones). A query variable runs its
    (rendered) SQL through ``run_query`` and takes the first column as its options; the current
    value is ``overrides[name]`` if given, else "All" (every option) when the variable has an All
    option, else the first option. Textbox, constant and custom variables take their ``query``
    (custom: comma-separated options).
    """
    overrides = overrides or {}
    resolved: dict[str, VarValue] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        name, kind = var["name"], var.get("type")
        quoted = bool(var.get("multi") or var.get("includeAll"))
        if kind == "query":
            sql = var["query"] if isinstance(var["query"], str) else var["query"].get("rawSql", "")
            rows = run_query(render(sql, time_range, resolved, interval_s))
            options = [str(r[0]) for r in rows if r and r[0] is not None]
        elif kind == "custom":
            options = [o.strip() for o in str(var.get("query", "")).split(",") if o.strip()]
        elif kind in ("textbox", "constant"):
            options = [str(var.get("query", ""))]
        else:
            raise RenderError(f"variable {name!r}: unsupported type {kind!r}")
        if name in overrides:
            chosen = overrides[name]
            values = (chosen,) if isinstance(chosen, str) else tuple(chosen)
        elif var.get("includeAll"):
            if var.get("allValue"):
                raise RenderError(f"variable {name!r}: custom all-values are not supported here")
            values = tuple(options)
        else:
            values = tuple(options[:1]) if options else ("",)
        resolved[name] = VarValue(values, quoted=quoted)
    return resolved
