"""The live run loop: consume predictions and labels from Kafka in a consumer group.

The loop owns polling, signals and rebalances; the engine stays pure; the store owns
durability. Order of steps per poll: take rebalance events (snapshot revoked partitions, load
assigned ones from their snapshots and seek there) → process the batch → write its rows (and a
checkpoint when due) in one transaction → commit offsets to Kafka (for lag visibility only: the
database snapshot is the source of truth for positions).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from pipeline.config import MonitorConfig
from pipeline.metrics import RunMetrics
from pipeline.runner import Pipeline, RunTotals
from pipeline.sources.kafka import CommitFailed, KafkaClientSettings, KafkaSource
from pipeline.storage.store import Store

log = logging.getLogger(__name__)

# With ``until_idle``: longest extra wait for a first partition assignment (a crashed member's
# partitions return to the group only when its session times out, 10 s by default)
ASSIGNMENT_WAIT_SECONDS = 60.0


@dataclass
class LiveStatus:
    totals: RunTotals
    lag: dict[tuple[str, int], int]
    partitions: frozenset[int]
    rate: float


class StopFlag:
    """Set by SIGTERM/SIGINT (or by a test) to finish the current batch and exit cleanly."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self, *_: object) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: finishing the batch, checkpointing, leaving the group", signum)
            self.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def run_live(
    store: Store,
    config: MonitorConfig,
    settings: KafkaClientSettings,
    *,
    run: str = "live",
    group: str = "infersentry",
    predictions_topic: str = "predictions",
    labels_topic: str | None = "labels",
    until_idle: float | None = None,
    stop: StopFlag | None = None,
    on_status: Callable[[LiveStatus], None] | None = None,
    status_every: float = 10.0,
    metrics: RunMetrics | None = None,
) -> RunTotals:
    """Consume until stopped (or idle for ``until_idle`` seconds); returns the totals.

    Idle time counts only while the consumer owns partitions: after a crash the group gives the
    dead member's partitions back only when its session times out, and a restart with
    ``until_idle`` waits for them (at most ``until_idle + ASSIGNMENT_WAIT_SECONDS``).
    """
    stop = stop if stop is not None else StopFlag()  # (a StopFlag is falsy until set)
    source_desc = f"kafka://{settings.bootstrap_servers}/{predictions_topic}" + (f"+{labels_topic}" if labels_topic else "")
    pipeline = Pipeline(store, config, run, "live", source_desc)
    source = KafkaSource(settings, group_id=group, predictions_topic=predictions_topic, labels_topic=labels_topic,
                         max_poll_records=config.batch_size)
    _check_copartitioned(source, predictions_topic, labels_topic)
    idle_since = time.monotonic()
    last_status = time.monotonic()
    started = time.monotonic()
    try:
        while not stop:
            messages = source.poll(max_records=config.batch_size, timeout_ms=int(config.max_batch_seconds * 1000))
            events = source.take_rebalance_events()
            if events:
                _rebalance(pipeline, source, events.revoked, events.assigned)
            if messages:
                idle_since = time.monotonic()
                result = pipeline.process(messages)
                if metrics is not None:
                    metrics.observe(result)
                _commit(source, pipeline, {(m.source, m.partition) for m in messages})
            elif until_idle is not None and not source.assignment():
                # not idle but waiting: a group restarting after a crash holds the partitions of
                # the dead member until its session times out; bounded, for a group with no
                # partition left for this process
                idle_since = time.monotonic()
                if time.monotonic() - started >= until_idle + ASSIGNMENT_WAIT_SECONDS:
                    log.warning("no partitions assigned within %.0fs: stopping", until_idle + ASSIGNMENT_WAIT_SECONDS)
                    break
            elif until_idle is not None and time.monotonic() - idle_since >= until_idle:
                log.info("no new messages for %.1fs: stopping", until_idle)
                break
            if time.monotonic() - last_status >= status_every:
                last_status = time.monotonic()
                lag = source.lag()
                if metrics is not None:
                    metrics.set_lag(lag)
                if on_status is not None:
                    on_status(LiveStatus(pipeline.totals, lag, frozenset(pipeline.engine.scopes),
                                         pipeline.totals.events / max(time.monotonic() - started, 1e-9)))
        pipeline.checkpoint()
        _commit(source, pipeline, set(source.assignment()))
        store.finish_run(run, "stopped")
    finally:
        source.close()
    return pipeline.totals


def _check_copartitioned(source: KafkaSource, predictions_topic: str, labels_topic: str | None) -> None:
    """Delayed labels join per partition: both topics need the same partition count."""
    if not labels_topic:
        return
    n_pred, n_lab = len(source.partitions_for(predictions_topic)), len(source.partitions_for(labels_topic))
    if n_pred and n_lab and n_pred != n_lab:
        log.warning("topics %s (%d partitions) and %s (%d partitions) are not co-partitioned: delayed labels "
                    "of some partitions will not find their predictions; give both the same partition count",
                    predictions_topic, n_pred, labels_topic, n_lab)


def _rebalance(pipeline: Pipeline, source: KafkaSource, revoked: frozenset[tuple[str, int]],
               assigned: frozenset[tuple[str, int]]) -> None:
    owned = {p for _, p in source.assignment()}
    gone = sorted({p for _, p in revoked} - owned)
    if gone:
        pipeline.checkpoint(gone)
        for p in gone:
            pipeline.engine.drop_scope(p)
        log.info("partitions revoked: %s (state snapshotted)", gone)
    new = sorted({p for _, p in assigned} - set(pipeline.engine.scopes))
    if not new:
        return
    positions = pipeline.restore(new)
    seek: dict[tuple[str, int], int] = {}
    for topic, p in assigned:
        if p in new:
            seek[(topic, p)] = positions.get(f"{topic}:{p}", 0)
    source.seek_to(seek)
    log.info("partitions assigned: %s (resuming from snapshot positions %s)", new, seek)


def _commit(source: KafkaSource, pipeline: Pipeline, partitions: set[tuple[str, int]]) -> None:
    offsets: dict[tuple[str, int], int] = {}
    for topic, p in partitions:
        scope = pipeline.engine.scopes.get(p)
        if scope is not None and f"{topic}:{p}" in scope.positions:
            offsets[(topic, p)] = scope.positions[f"{topic}:{p}"]
    if not offsets:
        return
    try:
        source.commit(offsets)
    except CommitFailed as exc:  # the group rebalanced; the database snapshot stays the truth
        log.info("offset commit skipped: %s", exc)
