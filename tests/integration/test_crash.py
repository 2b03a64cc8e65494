"""Fault injection: ``infersentry run`` killed with SIGKILL (no shutdown, no final checkpoint) twice
mid-stream, then restarted, ends with exactly the results of an uninterrupted run.

The database is the source of truth: detector state and Kafka positions are snapshotted together
with a batch's outputs, and every write is keyed and idempotent. After a hard kill the restart
seeks back to the last snapshot, so the events since then are scored again with the state they
were first scored with; their outputs must land once, and nothing may be missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Table, func, select

from pipeline.config import MonitorConfig
from pipeline.live import run_live
from pipeline.simulate import simulate
from pipeline.sources.kafka import KafkaClientSettings
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.storage.tables import alerts, checkpoints, dead_letters, flagged_events, window_stats

pytestmark = pytest.mark.kafka

N_EVENTS = 9000
BATCH = 300
CHECKPOINT_EVERY = 900
# reviewer columns are written by people, not the run
ALERT_COLUMNS = [c for c in alerts.c if c.name not in ("run", "status", "reviewer", "reviewed_at", "review_note")]


def rows(store: Store, table: Table, run: str, columns: list[Any] | None = None) -> list[tuple[Any, ...]]:
    cols = columns or [c for c in table.c if c.name != "run"]
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(*cols).where(table.c.run == run)).all())


def checkpointed_events(store: Store, run: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(checkpoints.c.events), 0))
                                .where(checkpoints.c.run == run)).scalar_one())


def start_run(bootstrap: str, topic: str, group: str, db: str, run: str, config: Path, log: Path) -> subprocess.Popen[str]:
    with open(log, "a") as sink:  # a file, not a pipe: a full pipe would block the child
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--bootstrap", bootstrap, "--topic", topic, "--labels-topic", "",
             "--group", group, "--db", db, "--run", run, "--config", str(config)],
            stdout=sink, stderr=subprocess.STDOUT, text=True, env={**os.environ, "INFERSENTRY_LOG_LEVEL": "WARNING"})


def kill_after_checkpoint_passes(proc: subprocess.Popen[str], store: Store, run: str, beyond: int, log: Path) -> int:
    """SIGKILL ``proc`` shortly after its checkpoints cover more than ``beyond`` events (mid-batch,
    between snapshots); returns the checkpointed count at the kill."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
        assert proc.poll() is None, log.read_text()[-2000:]
        done = checkpointed_events(store, run)
        if done > beyond:
            time.sleep(0.15)  # into the next batches, past the snapshot
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return done
    raise AssertionError("the run never checkpointed: " + log.read_text()[-2000:])


def test_sigkill_twice_then_restart_equals_an_uninterrupted_run(kafka_broker: str, unique_name: str,
                                                                db_url: str, tmp_path: Path) -> None:
    topic = f"p-{unique_name}"
    settings = KafkaClientSettings(bootstrap_servers=kafka_broker)
    # drift and attackers (so every detector family writes), on 2 partitions
    simulate(settings, predictions_topic=topic, labels_topic=f"l-{unique_name}", n_events=N_EVENTS,
             scenario="mixed", seed=21, partitions=2)
    cfg = MonitorConfig(batch_size=BATCH, checkpoint_every_events=CHECKPOINT_EVERY)
    config = tmp_path / "monitor.yaml"
    config.write_text(f"batch_size: {BATCH}\ncheckpoint_every_events: {CHECKPOINT_EVERY}\n")

    store = Store(make_engine(db_url))
    totals = run_live(store, cfg, settings, run="calm", group=f"calm-{unique_name}", predictions_topic=topic,
                      labels_topic=None, until_idle=3.0)
    assert totals.events == N_EVENTS

    group, log = f"crash-{unique_name}", tmp_path / "run.log"
    first = kill_after_checkpoint_passes(start_run(kafka_broker, topic, group, db_url, "crash", config, log), store,
                                         "crash", 0, log)
    second = kill_after_checkpoint_passes(start_run(kafka_broker, topic, group, db_url, "crash", config, log), store,
                                          "crash", first, log)
    assert 0 < first < second < N_EVENTS, (first, second)
    rest = run_live(store, cfg, settings, run="crash", group=group, predictions_topic=topic, labels_topic=None,
                    until_idle=3.0)
    # the restart resumed from the last snapshot (the second process's events after it are scored
    # again) and every event is in the final state exactly once
    assert N_EVENTS - second <= rest.events < N_EVENTS, (second, rest.events)
    assert checkpointed_events(store, "crash") == N_EVENTS

    calm_alerts = rows(store, alerts, "calm", ALERT_COLUMNS)
    kinds = {r[ALERT_COLUMNS.index(alerts.c.kind)] for r in calm_alerts}
    assert {"drift", "attack_campaign"} <= kinds, kinds  # the stream must make the detectors write
    assert rows(store, alerts, "crash", ALERT_COLUMNS) == calm_alerts
    assert rows(store, flagged_events, "crash") == rows(store, flagged_events, "calm")
    assert rows(store, dead_letters, "crash") == rows(store, dead_letters, "calm")
    assert rows(store, window_stats, "crash") == rows(store, window_stats, "calm")
    positions = {}
    with store.engine.connect() as conn:
        for r in conn.execute(select(checkpoints).where(checkpoints.c.run == "crash")).mappings():
            positions.update(orjson.loads(r["positions"]))
    assert sum(v for k, v in positions.items() if k.startswith(topic)) == N_EVENTS
