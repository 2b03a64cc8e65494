"""Durable writes: every micro-batch's rows idempotently, checkpoints in the same transaction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from pipeline.engine import BatchResult
from pipeline.rows import ALERT_UPDATE_COLUMNS
from pipeline.statecodec import FORMAT as STATE_FORMAT
from pipeline.storage.db import insert_ignore, migrate, upsert
from pipeline.storage.tables import (
    alert_reviews,
    alerts,
    checkpoints,
    dead_letters,
    flagged_events,
    runs,
    window_stats,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseNotAnswering(OperationalError):
    """A database call got no answer within the store's budget (a frozen server, a half-open
    connection): the call is abandoned and not retried, so the run fails instead of hanging."""


def _now() -> str:
    """Wall-clock time, for informational columns only (never for results)."""
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    """The pipeline's view of the database.

    Transient database failures (connection lost, server restarting) are retried with
    exponential backoff for up to ``retry_seconds``; then the error propagates and the run
    restarts from its last checkpoint. A server that accepts the connection but stops answering
    (frozen, or a half-open connection) raises no error at all, so on PostgreSQL every call runs
    on a worker thread and is abandoned with :class:`DatabaseNotAnswering` after
    ``max(retry_seconds, 1)`` seconds without an answer (SQLite calls run inline: an in-memory
    SQLite database lives in its thread, and a local file cannot stop answering that way).
    """

    def __init__(self, engine: Engine, retry_seconds: float = 120.0) -> None:
        self.engine = engine
        self.retry_seconds = retry_seconds
        migrate(engine)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        delay, waited = 0.5, 0.0
        while True:
            try:
                return self._answered(what, fn)
            except DatabaseNotAnswering:
                raise
            except (OperationalError, DBAPIError) as exc:
                if not _is_transient(exc) or waited >= self.retry_seconds:
                    raise
                log.warning("database unavailable during %s (%s); retrying in %.1fs", what, exc.orig, delay)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 10.0)

    def _answered(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, bounded in time on PostgreSQL (see the class docstring)."""
        if self.engine.dialect.name == "sqlite":
            return fn()
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=call, name=f"infersentry-db-{what}", daemon=True)
        worker.start()
        limit = max(self.retry_seconds, 1.0)
        worker.join(limit)
        if worker.is_alive():  # abandoned: a daemon thread, it ends with the process or the answer
            raise DatabaseNotAnswering(what, None, TimeoutError(f"the database gave no answer within {limit:.0f}s"))
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    # -- runs -----------------------------------------------------------------------------
    def start_run(self, run: str, kind: str, source: str, fingerprint: str | None, config_hash: str,
                  config_json: str, version: str) -> dict[str, Any] | None:
        """Register the run (or find it). Returns the existing row, if any."""
        def go() -> dict[str, Any] | None:
            with self.engine.begin() as conn:
                existing = conn.execute(select(runs).where(runs.c.run == run)).mappings().first()
                if existing is None:
                    insert_ignore(conn, runs, [{
                        "run": run, "kind": kind, "source": source, "input_fingerprint": fingerprint,
                        "config_hash": config_hash, "config_json": config_json, "version": version,
                        "status": "running", "events": 0, "dead_letters": 0, "started_at": _now(),
                    }])
                    return None
                # a live run restarted under an edited config records the config it runs with now
                # (every alert keeps its own config hash); a replay is bound to its config (see replay.claim_run)
                now = {"config_hash": config_hash, "config_json": config_json, "version": version} if kind == "live" else {}
                conn.execute(update(runs).where(runs.c.run == run).values(status="running", finished_at=None, **now))
                return dict(existing)
        return self._retry("start_run", go)

    def finish_run(self, run: str, status: str, finished_at: str | None = None) -> None:
        """Set the run's status and finish time (now, unless ``finished_at`` is given)."""
        def go() -> None:
            with self.engine.begin() as conn:
                conn.execute(update(runs).where(runs.c.run == run).values(status=status,
                                                                          finished_at=finished_at or _now()))
        self._retry("finish_run", go)

    def restore_run_status(self, run: str, status: str, finished_at: str | None) -> None:
        """Put back the status and finish time a run had before :meth:`start_run` (a refused start)."""
        def go() -> None:
            with self.engine.begin() as conn:
                conn.execute(update(runs).where(runs.c.run == run).values(status=status, finished_at=finished_at))
        self._retry("restore_run_status", go)

    # -- checkpoints ------------------------------------------------------------------------
    def load_checkpoints(self, run: str) -> dict[str, tuple[dict[str, int], bytes]]:
        def go() -> dict[str, tuple[dict[str, int], bytes]]:
            with self.engine.connect() as conn:
                rs = conn.execute(select(checkpoints).where(checkpoints.c.run == run)).mappings().all()
            out = {}
            for r in rs:
                if r["state_format"] != STATE_FORMAT:
                    raise ValueError(f"checkpoint {run}/{r['scope']} has unknown format {r['state_format']!r}")
                out[r["scope"]] = (orjson.loads(r["positions"]), bytes(r["state"]))
            return out
        return self._retry("load_checkpoints", go)

    # -- the hot path ---------------------------------------------------------------------
    def write(self, run: str, result: BatchResult, snapshots: list[dict[str, Any]] | None = None) -> None:
        """Write a batch's rows and, optionally, checkpoints (then run counters), in one transaction.

        ``snapshots`` items: ``{"scope", "positions", "state", "events", "last_event_ts"}`` and optionally
        ``"duplicates"`` (redeliveries skipped).
        """
        def go() -> None:
            with self.engine.begin() as conn:
                insert_ignore(conn, alerts, result.alerts)
                for row in result.alert_updates:
                    upsert(conn, alerts, [row], ALERT_UPDATE_COLUMNS)
                insert_ignore(conn, flagged_events, result.flagged)
                insert_ignore(conn, window_stats, result.stats)
                insert_ignore(conn, dead_letters, result.dead_letters)
                if result.min_ts is not None:  # a minimum: the same whatever the order of batches and processes
                    first = runs.c.first_event_ts
                    conn.execute(update(runs).where(runs.c.run == run, or_(first.is_(None), first > result.min_ts))
                                 .values(first_event_ts=result.min_ts))
                fresh = self._not_behind(conn, run, snapshots or [])
                if fresh:
                    upsert(conn, checkpoints, [
                        {"run": run, "scope": s["scope"], "positions": orjson.dumps(s["positions"]).decode(),
                         "state": s["state"], "state_format": STATE_FORMAT, "events": s["events"],
                         "duplicates": s.get("duplicates"), "last_event_ts": s["last_event_ts"], "saved_at": _now()}
                        for s in fresh
                    ], ("positions", "state", "state_format", "events", "duplicates", "last_event_ts", "saved_at"))
                if fresh:
                    self._refresh_run_counters(conn, run)
        self._retry("write", go)

    @staticmethod
    def _refresh_run_counters(conn: Any, run: str) -> None:
        """Run totals from what is durable (all partitions' checkpoints, all dead letters), so that
        several consumer processes of one run never overwrite each other's counts."""
        cp = checkpoints.c
        conn.execute(update(runs).where(runs.c.run == run).values(
            events=select(func.coalesce(func.sum(cp.events), 0)).where(cp.run == run).scalar_subquery(),
            duplicates=select(func.sum(cp.duplicates)).where(cp.run == run).scalar_subquery(),
            last_event_ts=select(func.max(cp.last_event_ts)).where(cp.run == run).scalar_subquery(),
            dead_letters=select(func.count()).select_from(dead_letters)
            .where(dead_letters.c.run == run).scalar_subquery(),
        ))

    @staticmethod
    def _not_behind(conn: Any, run: str, snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop snapshots older than the stored ones (a partition's new owner may have moved on).

        Any stored (state, positions) pair is consistent on its own, so this only saves work on
        the next restore; it never changes results.
        """
        if not snapshots:
            return []
        scopes = [s["scope"] for s in snapshots]
        stored = {
            r.scope: orjson.loads(r.positions)
            for r in conn.execute(select(checkpoints.c.scope, checkpoints.c.positions)
                                  .where(checkpoints.c.run == run, checkpoints.c.scope.in_(scopes)))
        }
        keep = []
        for s in snapshots:
            old = stored.get(s["scope"])
            ours = s["positions"]
            if old and all(old.get(k, -1) >= v for k, v in ours.items()) and old != ours:
                log.info("snapshot of %s/%s is behind the stored one; not written", run, s["scope"])
                continue
            keep.append(s)
        return keep

    # -- reading --------------------------------------------------------------------------
    def iter_alerts(self, run: str | None = None) -> Iterator[dict[str, Any]]:
        """Alerts ordered by (``raised_at``, ``alert_id``) as bytes, whatever the database's collation."""
        raised, aid = alerts.c.raised_at, alerts.c.alert_id
        if self.engine.dialect.name == "postgresql":
            raised, aid = raised.collate("C"), aid.collate("C")  # type: ignore[assignment]
        q = select(alerts).order_by(raised, aid)
        if run is not None:
            q = q.where(alerts.c.run == run)
        with self.engine.connect() as conn:
            for row in conn.execute(q).mappings():
                yield dict(row)

    def run_exists(self, run: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(runs).where(runs.c.run == run)).scalar_one() > 0

    def run_row(self, run: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(runs).where(runs.c.run == run)).mappings().first()
        return dict(r) if r else None

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run's row plus its ``alerts`` count, ordered by run name (as bytes)."""
        name = runs.c.run.collate("C") if self.engine.dialect.name == "postgresql" else runs.c.run
        counts = (select(alerts.c.run, func.count().label("n")).group_by(alerts.c.run).subquery())
        q = (select(runs, func.coalesce(counts.c.n, 0).label("alerts"))
             .select_from(runs.outerjoin(counts, counts.c.run == runs.c.run)).order_by(name))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def dead_letter_reasons(self, run: str) -> dict[str, int]:
        """Dead letters of ``run`` counted by reason."""
        q = (select(dead_letters.c.reason, func.count()).where(dead_letters.c.run == run)
             .group_by(dead_letters.c.reason))
        with self.engine.connect() as conn:
            return {reason: int(n) for reason, n in conn.execute(q)}

    def iter_dead_letters(self, run: str | None = None, stream: str | None = None) -> Iterator[dict[str, Any]]:
        """Dead letters (all runs, or ``run``'s; one stream or both) in (run, source, partition,
        position) order, raw bytes included."""
        q = select(dead_letters)
        if run is not None:
            q = q.where(dead_letters.c.run == run)
        if stream is not None:
            q = q.where(dead_letters.c.stream == stream)
        q = q.order_by(dead_letters.c.run, dead_letters.c.source, dead_letters.c.partition, dead_letters.c.position)
        with self.engine.connect() as conn:
            for row in conn.execute(q).mappings():
                out = dict(row)
                out["raw"] = bytes(out["raw"])
                yield out

    def review_count(self, run: str) -> int:
        """Status changes recorded in ``alert_reviews`` for ``run``'s alerts."""
        q = select(func.count()).select_from(alert_reviews).where(alert_reviews.c.run == run)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())


def _is_transient(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    return any(s in text for s in ("connection", "server closed", "terminating", "database is locked",
                                   "could not connect", "timeout", "the database system is"))
