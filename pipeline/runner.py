"""Glue between a source, the engine and the store: checkpoint policy and recovery.

The order of steps is fixed: process a micro-batch → write its rows (idempotent) and, when a
checkpoint is due, the snapshots of the scopes that changed plus their source positions, all
in one transaction → only then may a source commit its offsets. After a crash, the run
restores every scope from its snapshot and re-reads from the snapshot's positions;
re-processing writes nothing twice because every write is keyed and idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from pipeline import statecodec
from pipeline.config import MonitorConfig
from pipeline.engine import BatchResult, Engine
from pipeline.events import RawMessage
from pipeline.storage.store import Store

log = logging.getLogger(__name__)


def infersentry_version() -> str:
    try:
        return version("infersentry")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def scope_name(partition: int) -> str:
    return f"partition-{partition}"


@dataclass
class RunTotals:
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    alerts: int = 0
    batches: int = 0


class Pipeline:
    """One run: an :class:`Engine` plus durability in a :class:`Store`."""

    def __init__(self, store: Store, config: MonitorConfig, run: str, kind: str, source: str,
                 fingerprint: str | None = None) -> None:
        self.store = store
        self.config = config
        self.run = run
        self.engine = Engine(config, run)
        self.totals = RunTotals()
        self._since_checkpoint = 0
        self.existing = store.start_run(
            run, kind, source, fingerprint, self.engine.config_hash,
            config.model_dump_json(), infersentry_version())

    def restore(self, partitions: list[int] | None = None) -> dict[str, int]:
        """Load snapshots (all, or of ``partitions``); return the source positions to resume from."""
        positions: dict[str, int] = {}
        for scope, (pos, blob) in self.store.load_checkpoints(self.run).items():
            partition = int(scope.rsplit("-", 1)[1])
            if partitions is not None and partition not in partitions:
                continue
            self.engine.restore(partition, statecodec.decode(blob))
            positions.update(pos)
        return positions

    def process(self, messages: list[RawMessage], force_checkpoint: bool = False) -> BatchResult:
        result = self.engine.process(messages)
        self._since_checkpoint += len(messages)
        snapshots = None
        if force_checkpoint or self._since_checkpoint >= self.config.checkpoint_every_events:
            snapshots = self.snapshots()
        self.store.write(self.run, result, snapshots)
        self.totals.events += result.events
        self.totals.duplicates += result.duplicates
        self.totals.dead_letters += len(result.dead_letters)
        self.totals.alerts += len(result.alerts)
        self.totals.batches += 1
        return result

    def snapshots(self, partitions: list[int] | None = None) -> list[dict[str, object]]:
        """Snapshots of the scopes that changed since their last checkpoint."""
        self._since_checkpoint = 0
        out: list[dict[str, object]] = []
        for p, scope in sorted(self.engine.scopes.items()):
            if (partitions is not None and p not in partitions) or not scope.dirty:
                continue
            snap = self.engine.snapshot(p)
            out.append({
                "scope": scope_name(p),
                "positions": snap["positions"],
                "state": statecodec.encode(snap),
                "events": scope.events,
                "duplicates": scope.duplicates,
                "last_event_ts": scope.watermark if scope.watermark > float("-inf") else None,
            })
        return out

    def checkpoint(self, partitions: list[int] | None = None) -> None:
        """Snapshot changed scopes now (end of input, revoked partitions, shutdown)."""
        snaps = self.snapshots(partitions)
        if snaps:
            self.store.write(self.run, BatchResult(), snaps)

    def finish(self, status: str = "finished") -> None:
        self.checkpoint()
        self.store.finish_run(self.run, status)
