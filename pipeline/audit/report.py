"""What an auditor needs to know about one run, gathered from the store (no wall clock)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.review import STATUSES
from pipeline.rows import num
from pipeline.storage.store import Store
from pipeline.timefmt import format_ts

#: Kinds raised about one caller (listed with their client ids).
PER_CALLER_KINDS = ("attack_campaign", "extraction")
SEVERITIES = ("critical", "warning", "info")
REPORT_VERSION = 1


class UnknownRunError(LookupError):
    """No run of that name in the database."""


@dataclass(frozen=True, slots=True)
class AlertLine:
    """One alert, as a report lists it."""

    alert_id: str
    raised_at: str
    kind: str
    severity: str
    model: str
    model_version: str | None
    client_id: str | None
    score: float | None
    status: str
    evidence_events: int
    summary: str


@dataclass(frozen=True, slots=True)
class RunReport:
    """A run's audit report. Every field comes from stored rows, so the same run gives the same report."""

    run: dict[str, Any]  # name, kind, source, status, version, input_fingerprint, config_hash, started/finished
    events: int
    dead_letters: int
    dead_letters_by_reason: dict[str, int]
    duplicates: int | None  # redeliveries skipped; None for runs written before they were stored
    first_event_at: str | None
    last_event_at: str | None
    first_alert_at: str | None
    last_alert_at: str | None
    alerts: int
    by_kind_severity: dict[str, dict[str, int]]
    by_model: dict[str, int]
    by_status: dict[str, int]
    reviews_recorded: int
    top_alerts: list[AlertLine]
    caller_alerts: list[AlertLine]


def _line(a: dict[str, Any]) -> AlertLine:
    summary = orjson.loads(a["explanation"]).get("summary", "")
    return AlertLine(
        alert_id=a["alert_id"], raised_at=a["raised_at"], kind=a["kind"], severity=a["severity"],
        model=a["model"], model_version=a["model_version"], client_id=a["client_id"], score=num(a["score"]),
        status=a["status"], evidence_events=len(orjson.loads(a["event_ids"])),
        summary=" ".join(str(summary).split()),
    )


def _top(alerts: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` top alerts: most severe first; within a severity, the newest alert of every kind,
    model and caller before a second one of any (so one caller's hundred per-event alerts do not
    hide a drift or a campaign); then most recent, then by id (stable sorts)."""
    def severity(a: dict[str, Any]) -> int:
        return SEVERITIES.index(a["severity"]) if a["severity"] in SEVERITIES else len(SEVERITIES)

    out = sorted(alerts, key=lambda a: a["alert_id"])
    out.sort(key=lambda a: a["raised_at"], reverse=True)
    out.sort(key=severity)
    seen: set[tuple[Any, ...]] = set()
    repeat: dict[str, bool] = {}
    for a in out:
        group = (severity(a), a["kind"], a["model"], a["model_version"], a["client_id"])
        repeat[a["alert_id"]] = group in seen
        seen.add(group)
    out.sort(key=lambda a: (severity(a), repeat[a["alert_id"]]))
    return out[:max(n, 0)]


def _sorted_counts(counter: Counter[str]) -> dict[str, int]:
    return {k: counter[k] for k in sorted(counter)}


def build_report(store: Store, run: str, top: int = 10) -> RunReport:
    """Gather the report of ``run``; raises :class:`UnknownRunError` if there is no such run."""
    row = store.run_row(run)
    if row is None:
        raise UnknownRunError(f"no run named {run!r}")
    alerts = list(store.iter_alerts(run))
    by_ks: dict[str, Counter[str]] = {}
    by_model: Counter[str] = Counter()
    statuses: Counter[str] = Counter({s: 0 for s in STATUSES})
    for a in alerts:
        by_ks.setdefault(a["kind"], Counter())[a["severity"]] += 1
        by_model[f"{a['model']}@{a['model_version'] or '-'}"] += 1
        statuses[a["status"]] += 1
    extra = sorted(s for s in statuses if s not in STATUSES)
    reasons = store.dead_letter_reasons(run)
    callers = sorted((a for a in alerts if a["kind"] in PER_CALLER_KINDS),
                     key=lambda a: (a["client_id"] or "", a["raised_at"], a["alert_id"]))
    return RunReport(
        run={
            "name": row["run"], "kind": row["kind"], "source": row["source"], "status": row["status"],
            "version": row["version"], "input_fingerprint": row["input_fingerprint"],
            "config_hash": row["config_hash"], "started_at": row["started_at"], "finished_at": row["finished_at"],
        },
        events=int(row["events"] or 0),
        dead_letters=int(row["dead_letters"] or 0),
        dead_letters_by_reason={k: reasons[k] for k in sorted(reasons, key=lambda r: (-reasons[r], r))},
        duplicates=None if row["duplicates"] is None else int(row["duplicates"]),
        first_event_at=format_ts(row["first_event_ts"]),
        last_event_at=format_ts(row["last_event_ts"]),
        first_alert_at=alerts[0]["raised_at"] if alerts else None,
        last_alert_at=max(a["raised_at"] for a in alerts) if alerts else None,
        alerts=len(alerts),
        by_kind_severity={k: {s: by_ks[k][s] for s in SEVERITIES if by_ks[k][s]} for k in sorted(by_ks)},
        by_model=_sorted_counts(by_model),
        by_status={s: statuses[s] for s in (*STATUSES, *extra)},
        reviews_recorded=store.review_count(run),
        top_alerts=[_line(a) for a in _top(alerts, top)],
        caller_alerts=[_line(a) for a in callers],
    )
