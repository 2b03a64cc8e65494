"""The pure processing core: raw messages in, database rows out. No I/O, no clock.

Stages per micro-batch: decode → validate → drop redeliveries → route by (model, version,
partition) → columnar batches → detectors → rows. State is kept per *scope* (a source partition;
a file replay has one, and so has a Kafka range replay, via ``RawMessage.scope``), so that a Kafka
consumer can snapshot and hand over partitions independently. Everything depends only on the order of messages within a partition, never on
how the stream was cut into micro-batches.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors import builtin
from detectors.base import (
    REGISTRY,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    Kind,
    Severity,
    StateMismatchError,
    stable_hash,
)
from pipeline import rows
from pipeline.config import DEFAULT_DETECTORS, STREAM_DETECTORS, ConfigError, MonitorConfig
from pipeline.decode import DecodeError, class_key, decode_label, decode_prediction
from pipeline.events import EventBatch, OutcomeBatch, PredictionEvent, RawMessage, RouteKey
from pipeline.memory import EarlyLabels, PendingPredictions, RecentIds, RobustClock
from pipeline.reference import accepts_reference, load_reference
from pipeline.routing import build_batch, conforms, describe_features, learn_schema

log = logging.getLogger(__name__)

#: Distinct feature layouts reported per route before further changes are only counted.
MAX_SCHEMA_NOTICES = 20
STATE_VERSION = 2


@dataclass
class BatchResult:
    """Rows produced by one micro-batch, ready for an idempotent write."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    alert_updates: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    events: int = 0
    duplicates: int = 0
    max_ts: float | None = None
    min_ts: float | None = None  # earliest event time of the batch's scored predictions


class RouteState:
    """A route's learned schema, its detectors and its data-quality memory."""

    def __init__(self, route: RouteKey, schema_event: PredictionEvent, detectors: list[Detector],
                 index: int = 0) -> None:
        self.route = route
        self.index = index  # position in the scope's route order (how pending labels refer to it)
        self.schema = learn_schema(schema_event)
        self.names = frozenset(self.schema.numeric) | frozenset(self.schema.categorical)
        self.detectors = detectors
        self.signatures: list[str] = [describe_features(schema_event)]
        self.naive_ts = 0


class ScopeState:
    """Everything the engine remembers for one source partition."""

    def __init__(self, partition: int, config: MonitorConfig) -> None:
        self.partition = partition
        self.recent = RecentIds(config.dedup_horizon)
        self.pending = PendingPredictions(config.max_pending_labels, config.label_ttl_seconds)
        self.early = EarlyLabels(config.max_early_labels, config.early_label_wait_seconds)
        self.predictions_clock = RobustClock()
        self.routes: dict[RouteKey, RouteState] = {}
        self.route_order: list[RouteKey] = []
        self.route_keys: dict[tuple[str, str | None], RouteKey] = {}
        self.watermark = float("-inf")
        self.events = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.labels_matched = 0
        self.labels_unmatched = 0
        self.positions: dict[str, int] = {}
        self.dirty = False


class Engine:
    """Processes micro-batches of raw messages into rows for the run ``run``.

    >>> from pipeline.config import MonitorConfig
    >>> eng = Engine(MonitorConfig(), run="doc")
    >>> msg = RawMessage("predictions", "file:predictions", 0, 1, b'{"event_id": 1}')
    >>> eng.process([msg]).dead_letters[0]["reason"]
    'event_id must be a string, got integer'
    """

    def __init__(self, config: MonitorConfig, run: str) -> None:
        self.config = config
        self.run = run
        self.config_hash = config.config_hash()
        self.scopes: dict[int, ScopeState] = {}
        self._notices: list[tuple[RouteKey, Finding]] = []  # raised by restore, written with the next batch
        builtin.load()
        for name in self._configured_detector_names():
            if name not in REGISTRY and name not in DEFAULT_DETECTORS:
                raise ConfigError(f"unknown detector {name!r} in config (known: {', '.join(sorted(REGISTRY))})")

    # -- scopes ---------------------------------------------------------------------------
    def scope(self, partition: int) -> ScopeState:
        s = self.scopes.get(partition)
        if s is None:
            s = self.scopes[partition] = ScopeState(partition, self.config)
        return s

    def drop_scope(self, partition: int) -> None:
        self.scopes.pop(partition, None)

    def _configured_detector_names(self) -> set[str]:
        names = {n for n, spec in self.config.defaults.detectors.items() if spec.enabled}
        for model in self.config.models:
            names |= {n for n, spec in self.config.for_model(model).detectors.items() if spec.enabled}
        return names

    def _make_detectors(self, route: RouteKey, event: PredictionEvent) -> list[Detector]:
        mc = self.config.for_model(route.model)
        schema = learn_schema(event)
        enabled = [n for n, spec in mc.detectors.items() if spec.enabled and n in REGISTRY]
        n_stream = max(1, sum(1 for n in enabled if n in STREAM_DETECTORS))
        out: list[Detector] = []
        for name in sorted(enabled):
            budget = mc.events_between_false_alarms * (n_stream if name in STREAM_DETECTORS else 1)
            ctx = DetectorContext(
                route=route,
                schema=schema,
                seed=mc.seed,
                events_between_false_alarms=budget,
                event_fpr=mc.event_fpr,
                extra={"classes": mc.classes, "model_events_between_false_alarms": mc.events_between_false_alarms,
                       "stream_detectors": n_stream if name in STREAM_DETECTORS else 1},
            )
            params = dict(mc.detectors[name].params)
            if mc.reference_file and "reference" not in params and accepts_reference(REGISTRY[name]):
                params["reference"] = load_reference(mc.reference_file, route, schema, mc.reference_range())
            try:
                out.append(REGISTRY[name](ctx, **params))
            except (ValueError, TypeError) as exc:  # the config's parameter values (checked again here for configs
                # built in code; load_config checks a file's when it loads)
                raise ConfigError(f"model {route.model!r}: detector {name!r}: {str(exc).splitlines()[0]}") from exc
        return out

    # -- processing -----------------------------------------------------------------------
    def process(self, messages: list[RawMessage]) -> BatchResult:
        result = BatchResult()
        groups: dict[RouteKey, list[PredictionEvent]] = defaultdict(list)
        outcomes: dict[RouteKey, list[tuple[str, float, float, float]]] = defaultdict(list)
        dq: list[tuple[RouteKey, Finding]] = self._notices
        self._notices = []

        next_offsets: dict[tuple[int, str, int], int] = {}
        scope = None
        for msg in messages:
            sid = msg.partition if msg.scope is None else msg.scope
            if scope is None or scope.partition != sid:
                scope = self.scope(sid)
                scope.dirty = True
            next_offsets[(sid, msg.source, msg.partition)] = msg.offset + 1
            try:
                if msg.stream == "labels":
                    label = decode_label(msg.value, self.config.max_message_bytes)
                    if scope.recent.seen_before("label:" + label.event_id):
                        scope.duplicates += 1
                        result.duplicates += 1
                        continue
                    scope.watermark = max(scope.watermark, label.ts)
                    self._join_label(scope, label.event_id, label.ts, class_key(label.label), outcomes, dq,
                                     label.model)
                    continue
                event = decode_prediction(msg.value, self.config.max_message_bytes)
            except DecodeError as exc:
                result.dead_letters.append(self._dead_letter(scope, msg, str(exc)))
                scope.dead_letters += 1
                if scope.dead_letters in _alert_points(self.config.dead_letters_alert_at):
                    dq.append(self._dead_letter_alert(scope, msg, str(exc)))
                continue
            if scope.recent.seen_before(event.event_id):
                scope.duplicates += 1
                result.duplicates += 1
                continue
            route = scope.route_keys.get((event.model, event.model_version))
            if route is None:
                route = scope.route_keys[(event.model, event.model_version)] = RouteKey(
                    event.model, event.model_version, sid)
            state = scope.routes.get(route)
            if state is None:
                state = scope.routes[route] = RouteState(route, event, self._make_detectors(route, event),
                                                         len(scope.route_order))
                scope.route_order.append(route)
            elif not conforms(state.schema, event, state.names):
                self._schema_notice(state, event, dq)
            if event.naive_ts:
                state.naive_ts += 1
                if state.naive_ts == 1:
                    dq.append((route, self._dq_finding(
                        "timestamps", event.event_id, event.ts, float(state.naive_ts),
                        {"summary": "ts without a UTC offset, read as UTC", "example": str(event.raw.get("ts"))[:40]},
                        Severity.INFO)))
            scope.watermark = max(scope.watermark, event.ts)
            clock = scope.predictions_clock.value
            if scope.predictions_clock.update(event.ts) > clock and scope.early:
                for gone in scope.early.expire(scope.predictions_clock.value):
                    self._count_unmatched(scope, gone, dq)
            scope.events += 1
            result.events += 1
            if result.min_ts is None or event.ts < result.min_ts:
                result.min_ts = event.ts
            groups[route].append(event)
            predicted = class_key(event.prediction) or ""
            early = scope.early.take(event.event_id) if scope.early else None
            if event.label is not None:
                err = 0.0 if class_key(event.label) == predicted else 1.0
                outcomes[route].append((event.event_id, event.ts, event.ts, err))
            elif early is not None:  # its label overtook it
                scope.labels_matched += 1
                if early[0] is not None:
                    outcomes[route].append((event.event_id, early[1], event.ts, 0.0 if early[0] == predicted else 1.0))
            else:
                scope.pending.add(event.event_id, state.index, predicted, event.ts)

        for (sid, source, partition), offset in next_offsets.items():
            key = f"{source}:{partition}"
            self.scopes[sid].positions[key] = result.positions[key] = offset
        for route, events in groups.items():
            state = self.scope(route.partition).routes[route]
            batch = build_batch(route, state.schema, events)
            for det in state.detectors:
                if det.consumes == "events":
                    self._collect(result, route, det.process(batch), batch)
        for route, rows_ in outcomes.items():
            state = self.scope(route.partition).routes[route]
            ob = OutcomeBatch(
                route=route,
                event_ids=[r[0] for r in rows_],
                ts=np.array([r[1] for r in rows_]),
                predicted_ts=np.array([r[2] for r in rows_]),
                error=np.array([r[3] for r in rows_]),
            )
            for det in state.detectors:
                if det.consumes == "outcomes":
                    self._collect(result, route, det.process_outcomes(ob), None)
        for route, finding in dq:
            self._add_finding(result, route, finding)
        for scope in self.scopes.values():
            if scope.dirty:
                scope.pending.expire(scope.watermark)
        ts_values = [s.watermark for s in self.scopes.values() if s.watermark > float("-inf")]
        result.max_ts = max(ts_values) if ts_values else None
        return result

    def _join_label(self, scope: ScopeState, event_id: str, ts: float, label: str | None,
                    outcomes: dict[RouteKey, list[tuple[str, float, float, float]]],
                    dq: list[tuple[RouteKey, Finding]], model: str | None) -> None:
        held = scope.pending.awaits(event_id)
        item = scope.pending.take(event_id, scope.watermark)
        if item is None:
            if held:  # its prediction came, but longer than the TTL ago
                self._count_unmatched(scope, (event_id, ts, model), dq)
                return
            # its prediction may still come: labels can overtake predictions (a labels topic that
            # catches up faster, files merged by time); it waits in the early-label buffer
            for gone in scope.early.add(event_id, label, ts, model):
                self._count_unmatched(scope, gone, dq)
            return
        route_index, predicted, pred_ts = item
        scope.labels_matched += 1
        if label is None:
            return
        route = scope.route_order[route_index]
        outcomes[route].append((event_id, ts, pred_ts, 0.0 if label == predicted else 1.0))

    def _count_unmatched(self, scope: ScopeState, label: tuple[str, float, str | None], dq: list[tuple[RouteKey, Finding]]) -> None:
        """A label whose prediction never came (or had already expired): count it, alert at the thresholds."""
        event_id, ts, model = label
        scope.labels_unmatched += 1
        if scope.labels_unmatched in _alert_points(self.config.unmatched_labels_alert_at):
            route = RouteKey(model or "*", None, scope.partition)
            first = scope.labels_unmatched == self.config.unmatched_labels_alert_at
            dq.append((route, self._dq_finding(
                "labels", f"unmatched-labels:p{scope.partition}", ts, float(scope.labels_unmatched),
                {"summary": f"{scope.labels_unmatched} labels matched no prediction within the TTL",
                 "unmatched": scope.labels_unmatched, "matched": scope.labels_matched,
                 "last_unmatched_event_id": event_id},
                Severity.WARNING, update=not first)))

    def _schema_notice(self, state: RouteState, event: PredictionEvent, dq: list[tuple[RouteKey, Finding]]) -> None:
        sig = describe_features(event)
        if sig in state.signatures or len(state.signatures) >= MAX_SCHEMA_NOTICES:
            return
        state.signatures.append(sig)
        dq.append((state.route, self._dq_finding(
            "schema", event.event_id, event.ts, 1.0,
            {"summary": "feature layout differs from the learned schema; missing features are scored as missing",
             "expected": state.signatures[0], "got": sig},
            Severity.WARNING)))

    def _dq_finding(self, what: str, trigger: str, ts: float, score: float, explanation: dict[str, Any],
                    severity: Severity, update: bool = False) -> Finding:
        return Finding(
            kind=Kind.DATA_QUALITY, detector=f"data_quality.{what}", config_hash=self.config_hash,
            trigger_event_id=trigger, raised_at=ts, score=score, threshold=None, severity=severity,
            explanation=explanation, window_start=ts, window_end=ts, updated_at=ts if update else None,
            is_update=update,
        )

    def _dead_letter(self, scope: ScopeState, msg: RawMessage, reason: str) -> dict[str, Any]:
        return {
            "run": self.run,
            "source": msg.source,
            "partition": msg.partition,
            "position": msg.offset,
            "stream": msg.stream,
            "reason": reason[:2000],
            "raw": msg.value,
            "raw_preview": msg.value[:500].decode("utf-8", errors="replace"),
            "event_time_ts": scope.watermark if scope.watermark > float("-inf") else None,
        }

    def _dead_letter_alert(self, scope: ScopeState, msg: RawMessage, reason: str) -> tuple[RouteKey, Finding]:
        ts = scope.watermark if scope.watermark > float("-inf") else 0.0
        first = scope.dead_letters == self.config.dead_letters_alert_at
        return RouteKey("*", None, scope.partition), self._dq_finding(
            "dead_letters", f"dead-letters:{msg.source}:p{scope.partition}", ts, float(scope.dead_letters),
            {"summary": f"{scope.dead_letters} malformed messages dead-lettered", "last_reason": reason[:300],
             "last_position": f"{msg.source}:{msg.partition}:{msg.offset}"},
            Severity.WARNING, update=not first)

    def _collect(self, result: BatchResult, route: RouteKey, out: DetectorOutput, batch: EventBatch | None) -> None:
        for f in out.findings:
            self._add_finding(result, route, f)
        if out.flagged and batch is not None:
            where = {eid: i for i, eid in enumerate(batch.event_ids)}
            for fl in out.flagged:
                i = where.get(fl.event_id)
                if i is not None:
                    result.flagged.append(rows.flagged_row(self.run, route, fl, float(batch.ts[i]), batch.payloads[i]))
        result.stats.extend(rows.stat_row(self.run, route, s) for s in out.stats)

    def _add_finding(self, result: BatchResult, route: RouteKey, f: Finding) -> None:
        row = rows.alert_row(self.run, route, f)
        (result.alert_updates if f.is_update else result.alerts).append(row)

    # -- state ----------------------------------------------------------------------------
    def snapshot(self, partition: int) -> dict[str, Any]:
        """State of one scope, for ``pipeline.statecodec``; marks the scope clean."""
        s = self.scope(partition)
        s.dirty = False
        return {
            "engine_state_version": STATE_VERSION,
            "config_hash": self.config_hash,
            "partition": partition,
            "recent": s.recent.state(),
            "pending": s.pending.state(),
            "early_labels": s.early.state(),
            "predictions_clock": s.predictions_clock.state(),
            "watermark": s.watermark,
            "counters": {"events": s.events, "duplicates": s.duplicates, "dead_letters": s.dead_letters,
                         "labels_matched": s.labels_matched, "labels_unmatched": s.labels_unmatched},
            "positions": dict(s.positions),
            "routes": [
                {
                    "model": r.model, "model_version": r.model_version,
                    "schema_event": _schema_event_state(s.routes[r]),
                    "signatures": s.routes[r].signatures, "naive_ts": s.routes[r].naive_ts,
                    "detectors": [d.state_dict() for d in s.routes[r].detectors],
                }
                for r in s.route_order
            ],
        }

    def restore(self, partition: int, snap: dict[str, Any]) -> None:
        if snap.get("engine_state_version") != STATE_VERSION:
            raise ValueError(f"checkpoint has engine state version {snap.get('engine_state_version')}, expected {STATE_VERSION}")
        if snap.get("config_hash") != self.config_hash:
            raise ConfigError(
                f"checkpoint of run {self.run!r} was made with config {snap.get('config_hash')}, "
                f"not the current {self.config_hash}: use the same config or a new --run name")
        s = ScopeState(partition, self.config)
        s.recent.load(snap["recent"])
        s.pending.load(snap["pending"])
        s.early.load(snap["early_labels"])
        s.predictions_clock.load(snap["predictions_clock"])
        s.watermark = float(snap["watermark"])
        c = snap["counters"]
        s.events, s.duplicates, s.dead_letters = int(c["events"]), int(c["duplicates"]), int(c["dead_letters"])
        s.labels_matched, s.labels_unmatched = int(c["labels_matched"]), int(c["labels_unmatched"])
        s.positions = {k: int(v) for k, v in snap["positions"].items()}
        for r in snap["routes"]:
            route = RouteKey(r["model"], r["model_version"], partition)
            ev = _schema_event_from_state(r["schema_event"], route)
            state = RouteState(route, ev, self._make_detectors(route, ev), len(s.route_order))
            state.signatures = list(r["signatures"])
            state.naive_ts = int(r["naive_ts"])
            saved = {d.get("detector"): d for d in r["detectors"]}
            for det in state.detectors:
                self._load_detector(det, saved.get(det.name), route, s.watermark)
            s.routes[route] = state
            s.route_order.append(route)
        self.scopes[partition] = s


    def _load_detector(self, det: Detector, snap: dict[str, Any] | None, route: RouteKey, watermark: float) -> None:
        """Restore one detector; one that cannot be restored (an upgrade changed its version or
        parameters, or it is new) starts fresh, with a ``data_quality`` notice instead of a crash loop."""
        if snap is not None:
            try:
                det.load_state_dict(snap)
                return
            except StateMismatchError as exc:
                reason = str(exc)
        else:
            reason = f"{det.name}: no saved state in the checkpoint"
        log.warning("%s on %s: starting fresh (%s)", det.name, route.label, reason)
        ts = watermark if watermark > float("-inf") else 0.0
        self._notices.append((route, self._dq_finding(
            "restore", f"restore:{route.label}:{det.name}:{det.config_hash}", ts, 1.0,
            {"summary": f"{det.name} could not resume from the checkpoint and starts a new reference period",
             "reason": reason, "detector": det.name}, Severity.WARNING)))


def _alert_points(first: int) -> set[int]:
    """Counts at which a data-quality alert is raised (first) or updated: first × 10^k."""
    return {first * 10**k for k in range(12)}


def _schema_event_state(state: RouteState) -> dict[str, Any]:
    sc = state.schema
    return {"numeric": list(sc.numeric), "categorical": list(sc.categorical), "from_array": sc.from_array,
            "classes": list(sc.classes)}


def _schema_event_from_state(st: dict[str, Any], route: RouteKey) -> PredictionEvent:
    """A stand-in first event that reproduces the learned schema."""
    if st["from_array"]:
        features: Any = [0.0] * len(st["numeric"])
    else:
        features = {**{k: 0.0 for k in st["numeric"]}, **{k: "" for k in st["categorical"]}}
    classes = [str(c) for c in st.get("classes", [])]
    probabilities = {c: 1.0 / len(classes) for c in classes} if classes else None
    return PredictionEvent(event_id="", ts=0.0, model=route.model, model_version=route.model_version,
                           client_id=None, features=features, prediction="", probabilities=probabilities,
                           label=None, latency_ms=None, raw={})


def config_fingerprint(config: MonitorConfig) -> str:
    return stable_hash(config.model_dump(mode="json"))
