"""Replay an archived stream (a JSON Lines file, optionally with labels) as a named run."""

from __future__ import annotations

import contextlib
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
    """Process ``messages`` in micro-batches of the config's size; false if stopped early.

    An exception (or Ctrl-C) marks the run ``failed`` (``interrupted``) before it propagates, so
    ``runs list`` never shows a dead replay as ``running``; run again, it resumes from its last
    checkpoint all the same.
    """
    try:
        for i, batch in enumerate(_batches(messages, pipeline.config.batch_size)):
            if stop_after_batches is not None and i >= stop_after_batches:
                return False
            pipeline.process(batch)
            if after_batch is not None:
                after_batch()
    except BaseException as exc:
        store, retry = pipeline.store, pipeline.store.retry_seconds
        store.retry_seconds = 0.0  # best effort: the database itself may be what failed
        with contextlib.suppress(Exception):
            pipeline.finish("failed" if isinstance(exc, Exception) else "interrupted")
        store.retry_seconds = retry
        raise
    return True


def claim_run(pipeline: Pipeline, fingerprint: str) -> bool:
    """Check that an existing run of this name is this replay: same input and same config.

    True when it is already finished (nothing to do; it is left exactly as it was). A run name
    holding other input, or made with another config, is refused (its record is left as it was):
    resuming it would mix two configs' alerts under one run, and an audit's record must say which
    config produced them.
    """
    existing, name = pipeline.existing, pipeline.run
    if existing is None:
        return False
    problem = None
    if existing["input_fingerprint"] not in (None, fingerprint):
        problem = f"run {name!r} already holds a replay of other input; choose another --run name"
    elif existing["config_hash"] != pipeline.engine.config_hash:
        problem = (f"run {name!r} was replayed with config {existing['config_hash']}, this config is "
                   f"{pipeline.engine.config_hash}; choose another --run name (without --run the name "
                   "follows the input and the config)")
    if problem or existing["status"] == "finished":
        pipeline.store.restore_run_status(name, existing["status"], existing["finished_at"])
    if problem:
        raise ReplayInputError(problem)
    return bool(existing["status"] == "finished")


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
    if claim_run(pipeline, fp):  # finished before: the record (and its finish time) stays as it was
        return ReplaySummary(name, pipeline.totals, resumed=False, already_complete=True)
    positions = pipeline.restore()
    progress = ReadProgress(predictions, labels)
    after = (lambda: on_batch(progress, pipeline.totals)) if on_batch is not None else None
    if not feed(pipeline, read_replay(predictions, labels, positions, progress), after, stop_after_batches):
        return ReplaySummary(name, pipeline.totals, resumed=bool(positions), already_complete=False)
    pipeline.finish()
    return ReplaySummary(name, pipeline.totals, resumed=bool(positions), already_complete=False)
