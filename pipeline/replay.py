"""Replay an archived stream (a JSON Lines file, optionally with labels) as a named run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from pipeline.config import MonitorConfig
from pipeline.events import RawMessage
from pipeline.runner import Pipeline, RunTotals
from pipeline.sources.files import ReadProgress, fingerprint, read_replay
from pipeline.storage.store import Store


class ReplayInputError(ValueError):
    """A replay input file is missing or unreadable."""


@dataclass(frozen=True)
class ReplaySummary:
    run: str
    totals: RunTotals
    resumed: bool
    already_complete: bool


def derive_run_name(predictions: Path, labels: Path | None, config: MonitorConfig) -> str:
    """``replay-<12 hex>`` from the inputs' bytes and the config hash (never the clock)."""
    return "replay-" + fingerprint(predictions, labels, extra=config.config_hash())[:12]


def _batches(messages: Iterator[RawMessage], size: int) -> Iterator[list[RawMessage]]:
    while batch := list(islice(messages, size)):
        yield batch


def feed(pipeline: Pipeline, messages: Iterator[RawMessage], after_batch: Callable[[], None] | None = None,
         stop_after_batches: int | None = None) -> bool:
    """Process ``messages`` in micro-batches of the config's size; false if stopped early."""
    for i, batch in enumerate(_batches(messages, pipeline.config.batch_size)):
        if stop_after_batches is not None and i >= stop_after_batches:
            return False
        pipeline.process(batch)
        if after_batch is not None:
            after_batch()
    return True


def replay_file(
    store: Store,
    config: MonitorConfig,
    predictions: Path,
    labels: Path | None = None,
    run: str | None = None,
    on_batch: Callable[[ReadProgress, RunTotals], None] | None = None,
    stop_after_batches: int | None = None,
) -> ReplaySummary:
    """Replay ``predictions`` (and ``labels``) into ``store`` as run ``run``.

    A run interrupted earlier resumes from its last checkpoint; a finished run is left as it
    is. ``stop_after_batches`` stops without finishing (used to test crash recovery).
    """
    for p in (predictions, labels):
        if p is not None and not p.is_file():
            raise ReplayInputError(f"no such file: {p}")
    fp = fingerprint(predictions, labels)
    name = run or derive_run_name(predictions, labels, config)
    source = str(predictions) + (f" + {labels}" if labels else "")
    pipeline = Pipeline(store, config, name, "replay", source, fp)
    existing = pipeline.existing
    if existing is not None and existing["input_fingerprint"] not in (None, fp):
        store.finish_run(name, existing["status"], finished_at=existing["finished_at"])  # left as it was
        raise ReplayInputError(f"run {name!r} already holds a replay of other input; choose another --run name")
    if existing is not None and existing["status"] == "finished" and existing["input_fingerprint"] == fp:
        # nothing to do: the run stays as it was (an audit's record keeps its original finish time)
        store.finish_run(name, "finished", finished_at=existing["finished_at"])
        return ReplaySummary(name, pipeline.totals, resumed=False, already_complete=True)
    positions = pipeline.restore()
    progress = ReadProgress(predictions, labels)
    after = (lambda: on_batch(progress, pipeline.totals)) if on_batch is not None else None
    if not feed(pipeline, read_replay(predictions, labels, positions, progress), after, stop_after_batches):
        return ReplaySummary(name, pipeline.totals, resumed=bool(positions), already_complete=False)
    pipeline.finish()
    return ReplaySummary(name, pipeline.totals, resumed=bool(positions), already_complete=False)
