"""Two runs' alerts matched by ``alert_id``: only in one run, or in both but changed.

An ``alert_id`` includes the raising detector's config hash, so a config change gives every alert of
the changed detectors a new id. Alerts left unmatched by id that share their finding (detector, kind,
model, version, caller and trigger event) are paired as *re-keyed*: the same finding under another
config, compared field by field like changed alerts. Only what neither run matches is "only in".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.audit.report import UnknownRunError
from pipeline.rows import EXPORT_FIELDS, export_record
from pipeline.storage.store import Store

#: Export fields never compared: the identity itself and the run that produced it.
_IDENTITY = ("alert_id", "run")
#: What a finding is, apart from the config that found it.
FINDING_KEY = ("detector", "kind", "model", "model_version", "client_id", "trigger_event_id")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One export field (or ``explanation.KEY``) whose value differs between the two runs."""

    field: str
    a: Any
    b: Any


@dataclass(frozen=True, slots=True)
class ChangedAlert:
    """An alert of both runs that differs (``alert_id_b`` differs from ``alert_id`` when re-keyed)."""

    alert_id: str
    alert_id_b: str
    kind: str
    raised_at: str
    changes: list[FieldChange]


@dataclass(frozen=True, slots=True)
class RunSide:
    """What the diff records about one of the two runs."""

    run: str
    config_hash: str
    input_fingerprint: str | None
    alerts: int


@dataclass(frozen=True, slots=True)
class RunDiff:
    a: RunSide
    b: RunSide
    only_in_a: list[dict[str, Any]] = field(default_factory=list)  # export records
    only_in_b: list[dict[str, Any]] = field(default_factory=list)
    changed: list[ChangedAlert] = field(default_factory=list)
    rekeyed: list[ChangedAlert] = field(default_factory=list)
    unchanged: int = 0
    compared_status: bool = False

    @property
    def differing(self) -> int:
        return len(self.only_in_a) + len(self.only_in_b) + len(self.changed) + len(self.rekeyed)

    @property
    def identical(self) -> bool:
        return self.differing == 0

    def verdict(self) -> str:
        """``identical alerts`` or ``N differ (...)``: one line."""
        if self.identical:
            return f"identical alerts ({self.unchanged} in both)"
        return (f"{self.differing} differ ({len(self.only_in_a)} only in {self.a.run}, {len(self.only_in_b)} only in "
                f"{self.b.run}, {len(self.changed)} changed, {len(self.rekeyed)} re-keyed by a config change; "
                f"{self.unchanged} identical)")


def compare_alerts(a: dict[str, Any], b: dict[str, Any], with_status: bool = False) -> list[FieldChange]:
    """Fields of two export records of the same alert that differ (explanation key by key)."""
    skip = _IDENTITY if with_status else (*_IDENTITY, "status")
    out: list[FieldChange] = []
    for name in EXPORT_FIELDS:
        if name in skip or a[name] == b[name]:
            continue
        if name == "explanation" and isinstance(a[name], dict) and isinstance(b[name], dict):
            for key in sorted(set(a[name]) | set(b[name])):
                va, vb = a[name].get(key), b[name].get(key)
                if va != vb or (key in a[name]) != (key in b[name]):
                    out.append(FieldChange(f"explanation.{key}", va, vb))
        else:
            out.append(FieldChange(name, a[name], b[name]))
    return out


def diff_runs(store: Store, run_a: str, run_b: str, with_status: bool = False) -> RunDiff:
    """Match the alerts of ``run_a`` and ``run_b`` by ``alert_id``; :class:`UnknownRunError` if one is missing."""
    sides = []
    for run in (run_a, run_b):
        row = store.run_row(run)
        if row is None:
            raise UnknownRunError(f"no run named {run!r}")
        sides.append(row)
    alerts_a = {r["alert_id"]: export_record(r) for r in store.iter_alerts(run_a)}
    alerts_b = {r["alert_id"]: export_record(r) for r in store.iter_alerts(run_b)}
    changed, unchanged = [], 0
    for aid, rec in alerts_a.items():  # in (raised_at, alert_id) order
        other = alerts_b.get(aid)
        if other is None:
            continue
        changes = compare_alerts(rec, other, with_status)
        if changes:
            changed.append(ChangedAlert(aid, aid, rec["kind"], rec["raised_at"], changes))
        else:
            unchanged += 1
    rest_b: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for aid, rec in alerts_b.items():
        if aid not in alerts_a:
            rest_b.setdefault(_finding(rec), []).append(rec)
    rekeyed, only_a, paired_b = [], [], set()
    for aid, rec in alerts_a.items():
        if aid in alerts_b:
            continue
        candidates = rest_b.get(_finding(rec))
        if not candidates:
            only_a.append(rec)
            continue
        other = candidates.pop(0)
        paired_b.add(other["alert_id"])
        rekeyed.append(ChangedAlert(aid, other["alert_id"], rec["kind"], rec["raised_at"],
                                    compare_alerts(rec, other, with_status)))
    return RunDiff(
        a=_side(sides[0], len(alerts_a)), b=_side(sides[1], len(alerts_b)),
        only_in_a=only_a,
        only_in_b=[r for aid, r in alerts_b.items() if aid not in alerts_a and aid not in paired_b],
        changed=changed, rekeyed=rekeyed, unchanged=unchanged, compared_status=with_status,
    )


def _finding(rec: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(rec[k] for k in FINDING_KEY)


def _side(row: dict[str, Any], n: int) -> RunSide:
    return RunSide(run=row["run"], config_hash=row["config_hash"], input_fingerprint=row["input_fingerprint"], alerts=n)
