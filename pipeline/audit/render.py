"""Renderings of a :class:`RunReport` (text, JSON, Markdown) and a :class:`RunDiff` (text, JSON).

Every rendering is a pure function of its input, so the same report renders to the same bytes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from pipeline.audit.diff import RunDiff
from pipeline.audit.report import REPORT_VERSION, SEVERITIES, AlertLine, RunReport

REPORT_FORMATS = ("text", "json", "markdown")
DIFF_FORMATS = ("text", "json")
_SUMMARY_WIDTH = 120
#: At most this many entries of each diff list in the text rendering (the JSON has them all).
TEXT_DIFF_LIMIT = 50


def _json(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n"


def _n(x: int | None) -> str:
    return "not recorded" if x is None else f"{x:,}"


def _v(x: Any) -> str:
    return "-" if x is None or x == "" else str(x)


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


# -- report ---------------------------------------------------------------------------------------
def report_json(r: RunReport) -> str:
    return _json({"report_version": REPORT_VERSION, **asdict(r)})


def _alert_text(a: AlertLine) -> str:
    who = f" client {a.client_id}" if a.client_id else ""
    return (f"{a.raised_at}  {a.severity:<8} {a.kind:<15} {a.model}@{a.model_version or '-'}{who}  "
            f"score {_score(a.score)}  {a.status}  {a.alert_id}\n      {a.summary[:_SUMMARY_WIDTH]}")


def report_text(r: RunReport) -> str:
    run = r.run
    out = [f"run {run['name']} ({run['kind']}, {run['status']})",
           f"  source             {run['source']}",
           f"  input fingerprint  {_v(run['input_fingerprint'])}",
           f"  config hash        {run['config_hash']}",
           f"  infersentry        {run['version']}",
           f"  started / finished {_v(run['started_at'])} / {_v(run['finished_at'])}",
           "",
           "events",
           f"  scored             {_n(r.events)}",
           f"  duplicates skipped {_n(r.duplicates)}",
           f"  dead letters       {_n(r.dead_letters)}"]
    out += [f"    {n:>8,}  {reason}" for reason, n in r.dead_letters_by_reason.items()]
    out += [f"  event time         {r.first_event_at or 'not recorded'} .. {r.last_event_at or 'not recorded'}",
            f"  alerts raised      {_v(r.first_alert_at)} .. {_v(r.last_alert_at)}",
            "",
            f"alerts: {r.alerts:,}"]
    if r.by_kind_severity:
        out.append(f"  {'kind':<16}" + "".join(f"{s:>10}" for s in SEVERITIES))
        for kind, sev in r.by_kind_severity.items():
            out.append(f"  {kind:<16}" + "".join(f"{sev.get(s, 0):>10,}" for s in SEVERITIES))
    out.append("by model@version")
    out += [f"  {n:>8,}  {m}" for m, n in r.by_model.items()] or ["  none"]
    out.append(f"reviewer status ({r.reviews_recorded:,} reviews recorded)")
    out += [f"  {n:>8,}  {s}" for s, n in r.by_status.items()]
    out += ["", f"top {len(r.top_alerts)} alerts (most severe; each kind, model and caller once before repeats; "
            "newest first)"]
    out += [f"  {_alert_text(a)}" for a in r.top_alerts] or ["  none"]
    out += ["", f"per-caller alerts ({len(r.caller_alerts)})"]
    out += [f"  {_alert_text(a)}" for a in r.caller_alerts] or ["  none"]
    return "\n".join(out) + "\n"


def _md(s: Any) -> str:
    return _v(s).replace("|", "\\|").replace("\n", " ")


def _md_alerts(alerts: list[AlertLine]) -> list[str]:
    if not alerts:
        return ["none"]
    out = ["| raised_at | severity | kind | model | client | score | status | summary | alert_id |",
           "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {a.raised_at} | {a.severity} | {a.kind} | {_md(a.model)}@{_md(a.model_version)} | {_md(a.client_id)} "
            f"| {_score(a.score)} | {a.status} | {_md(a.summary[:_SUMMARY_WIDTH])} | `{a.alert_id}` |" for a in alerts]
    return out


def report_markdown(r: RunReport) -> str:
    run = r.run
    out = [f"# Run `{run['name']}`", "",
           "| | |", "|---|---|",
           f"| kind | {run['kind']} |", f"| status | {run['status']} |", f"| source | `{_md(run['source'])}` |",
           f"| input fingerprint | `{_md(run['input_fingerprint'])}` |", f"| config hash | `{run['config_hash']}` |",
           f"| infersentry | {run['version']} |", f"| started | {_v(run['started_at'])} |",
           f"| finished | {_v(run['finished_at'])} |", "",
           "## Events", "",
           "| | |", "|---|---|",
           f"| scored | {_n(r.events)} |", f"| duplicates skipped | {_n(r.duplicates)} |",
           f"| dead letters | {_n(r.dead_letters)} |",
           f"| event time | {r.first_event_at or 'not recorded'} .. {r.last_event_at or 'not recorded'} |",
           f"| alerts raised | {_v(r.first_alert_at)} .. {_v(r.last_alert_at)} |", ""]
    if r.dead_letters_by_reason:
        out += ["| dead letters | reason |", "|---:|---|"]
        out += [f"| {n:,} | {_md(reason)} |" for reason, n in r.dead_letters_by_reason.items()]
        out.append("")
    out += [f"## Alerts: {r.alerts:,}", "", "| kind | " + " | ".join(SEVERITIES) + " |",
            "|---|" + "---:|" * len(SEVERITIES)]
    out += [f"| {kind} | " + " | ".join(f"{sev.get(s, 0):,}" for s in SEVERITIES) + " |"
            for kind, sev in r.by_kind_severity.items()]
    out += ["", "| model@version | alerts |", "|---|---:|"]
    out += [f"| {_md(m)} | {n:,} |" for m, n in r.by_model.items()]
    out += ["", f"Reviewer status ({r.reviews_recorded:,} reviews recorded):", "", "| status | alerts |", "|---|---:|"]
    out += [f"| {s} | {n:,} |" for s, n in r.by_status.items()]
    out += ["", f"## Top {len(r.top_alerts)} alerts", "", *_md_alerts(r.top_alerts),
            "", f"## Per-caller alerts ({len(r.caller_alerts)})", "", *_md_alerts(r.caller_alerts)]
    return "\n".join(out) + "\n"


def render_report(r: RunReport, fmt: str) -> str:
    return {"text": report_text, "json": report_json, "markdown": report_markdown}[fmt](r)


# -- diff -----------------------------------------------------------------------------------------
def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    keys = ("alert_id", "kind", "detector", "model", "model_version", "client_id", "raised_at", "trigger_event_id",
            "severity", "score")
    return {k: rec[k] for k in keys}


def diff_json(d: RunDiff) -> str:
    return _json({
        "a": asdict(d.a), "b": asdict(d.b),
        "config_hash_differs": d.a.config_hash != d.b.config_hash,
        "input_fingerprint_differs": d.a.input_fingerprint != d.b.input_fingerprint,
        "compared_status": d.compared_status,
        "identical": d.identical, "differing": d.differing, "unchanged": d.unchanged, "verdict": d.verdict(),
        "only_in_a": [_brief(r) for r in d.only_in_a],
        "only_in_b": [_brief(r) for r in d.only_in_b],
        "changed": [asdict(c) for c in d.changed],
        "rekeyed": [asdict(c) for c in d.rekeyed],
    })


def _value(x: Any) -> str:
    text = orjson.dumps(x).decode() if not isinstance(x, str) else x
    return text if len(text) <= 80 else text[:77] + "..."


def diff_text(d: RunDiff) -> str:
    out = [f"A: {d.a.run}  {d.a.alerts:,} alerts  config {d.a.config_hash}  input {_v(d.a.input_fingerprint)}",
           f"B: {d.b.run}  {d.b.alerts:,} alerts  config {d.b.config_hash}  input {_v(d.b.input_fingerprint)}"]
    if d.a.config_hash != d.b.config_hash:
        out.append("config hashes differ")
    if d.a.input_fingerprint != d.b.input_fingerprint:
        out.append("input fingerprints differ")
    for title, recs in ((f"only in A ({len(d.only_in_a)})", d.only_in_a), (f"only in B ({len(d.only_in_b)})", d.only_in_b)):
        if recs:
            out += ["", title]
            out += [f"  {r['raised_at']}  {r['severity']:<8} {r['kind']:<15} {r['model']}@{r['model_version'] or '-'}"
                    + (f" client {r['client_id']}" if r["client_id"] else "") + f"  {r['alert_id']}"
                    for r in recs[:TEXT_DIFF_LIMIT]]
            if len(recs) > TEXT_DIFF_LIMIT:
                out.append(f"  ... {len(recs) - TEXT_DIFF_LIMIT} more (--format json lists all)")
    for title, items in ((f"changed ({len(d.changed)})", d.changed),
                         (f"re-keyed: same finding, other detector config ({len(d.rekeyed)})", d.rekeyed)):
        if not items:
            continue
        out += ["", title]
        bare = [c for c in items if [ch.field for ch in c.changes] == ["explanation.config_hash"]]
        if bare and items is d.rekeyed:  # the bulk of a config change: say so once
            out.append(f"  {len(bare)} differ only in explanation.config_hash (--format json lists them)")
            items = [c for c in items if c not in bare]
        for c in items[:TEXT_DIFF_LIMIT]:
            ids = c.alert_id if c.alert_id == c.alert_id_b else f"{c.alert_id} -> {c.alert_id_b}"
            out.append(f"  {c.raised_at}  {c.kind:<15} {ids}: {', '.join(ch.field for ch in c.changes) or 'no field'}")
            out += [f"      {ch.field}: {_value(ch.a)} -> {_value(ch.b)}" for ch in c.changes]
        if len(items) > TEXT_DIFF_LIMIT:
            out.append(f"  ... {len(items) - TEXT_DIFF_LIMIT} more (--format json lists all)")
    out += ["", d.verdict()]
    return "\n".join(out) + "\n"


def render_diff(d: RunDiff, fmt: str) -> str:
    return {"text": diff_text, "json": diff_json}[fmt](d)
