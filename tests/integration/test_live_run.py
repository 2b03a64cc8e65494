"""The live pipeline against the real local Kafka broker and a real database."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from pipeline import statecodec
from pipeline.config import MonitorConfig
from pipeline.live import StopFlag, run_live
from pipeline.simulate import simulate
from pipeline.sources.kafka import KafkaClientSettings, KafkaSink, ensure_topics
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.storage.tables import alerts, checkpoints, dead_letters, flagged_events

pytestmark = pytest.mark.kafka


def settings(bootstrap: str) -> KafkaClientSettings:
    return KafkaClientSettings(bootstrap_servers=bootstrap)


def checkpoint_rows(store: Store, run: str) -> dict[str, dict[str, int]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(checkpoints).where(checkpoints.c.run == run)).mappings().all()
    return {r["scope"]: {"events": r["events"], **orjson.loads(r["positions"])} for r in rows}


def count(store: Store, table: object, run: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(table.c.run == run)).scalar_one()  # type: ignore[attr-defined]


def test_simulate_run_lands_in_database(kafka_broker: str, unique_name: str, db_url: str) -> None:
    pred, lab = f"p-{unique_name}", f"l-{unique_name}"
    n_pred, n_lab = simulate(settings(kafka_broker), predictions_topic=pred, labels_topic=lab, n_events=6000,
                             scenario="mixed", seed=3, partitions=4)
    assert n_pred == 6000 and n_lab > 0
    store = Store(make_engine(db_url))
    cfg = MonitorConfig(batch_size=500, checkpoint_every_events=2000)
    totals = run_live(store, cfg, settings(kafka_broker), run="live", group=f"g-{unique_name}",
                      predictions_topic=pred, labels_topic=lab, until_idle=3.0)
    assert totals.events == 6000
    cps = checkpoint_rows(store, "live")
    assert sum(c["events"] for c in cps.values()) == 6000
    assert sum(v for c in cps.values() for k, v in c.items() if k.startswith(pred)) == 6000
    assert count(store, alerts, "live") > 0


def test_restart_resumes_without_loss_or_duplicates(kafka_broker: str, unique_name: str) -> None:
    pred, lab = f"p-{unique_name}", f"l-{unique_name}"
    simulate(settings(kafka_broker), predictions_topic=pred, labels_topic=lab, n_events=3000, seed=5, partitions=2)
    store = Store(make_engine("sqlite://"))
    cfg = MonitorConfig(batch_size=400, checkpoint_every_events=1000)
    kw = dict(run="live", group=f"g-{unique_name}", predictions_topic=pred, labels_topic=lab, until_idle=3.0)
    first = run_live(store, cfg, settings(kafka_broker), **kw)  # type: ignore[arg-type]
    assert first.events == 3000
    flagged_before = count(store, flagged_events, "live")
    simulate(settings(kafka_broker), predictions_topic=pred, labels_topic=lab, n_events=1500, seed=6, partitions=2)
    second = run_live(store, cfg, settings(kafka_broker), **kw)  # type: ignore[arg-type]
    assert second.events == 1500  # only the new messages: nothing lost, nothing scored twice
    assert sum(c["events"] for c in checkpoint_rows(store, "live").values()) == 4500
    assert count(store, flagged_events, "live") >= flagged_before


def test_poison_message_goes_to_dead_letters_and_partition_continues(kafka_broker: str, unique_name: str) -> None:
    pred = f"p-{unique_name}"
    ensure_topics(kafka_broker, {pred: 1})
    good = [orjson.dumps({"event_id": f"e{i}", "ts": 1.7e9 + i, "model": "m", "client_id": "c",
                          "features": [float(i % 7), 1.0], "prediction": "a"}) for i in range(300)]
    with KafkaSink(settings(kafka_broker)) as sink:
        for i, v in enumerate(good):
            sink.send(pred, v, b"c")
            if i == 100:
                sink.send(pred, b"\xff\xfe not json", b"c")
                sink.send(pred, b'{"event_id": "x", "ts": Infinity}', b"c")
    store = Store(make_engine("sqlite://"))
    totals = run_live(store, MonitorConfig(batch_size=64), settings(kafka_broker), run="live",
                      group=f"g-{unique_name}", predictions_topic=pred, labels_topic=None, until_idle=3.0)
    assert totals.events == 300 and totals.dead_letters == 2
    with store.engine.connect() as conn:
        rows = conn.execute(select(dead_letters)).mappings().all()
    assert {r["position"] for r in rows} == {101, 102}
    assert all(r["source"] == pred and r["reason"] for r in rows)


def test_labels_that_run_ahead_of_their_predictions_still_join(kafka_broker: str, unique_name: str) -> None:
    """A consumer catching up: every label is already in the (small) labels topic, and each poll reads
    as many labels as predictions, so labels overtake their predictions by far. None may be lost."""
    pred, lab = f"p-{unique_name}", f"l-{unique_name}"
    ensure_topics(kafka_broker, {pred: 1, lab: 1})
    n = 3000
    with KafkaSink(settings(kafka_broker)) as sink:
        for i in range(0, n, 2):  # labels first: half of the predictions get one, 60 s after it
            sink.send(lab, orjson.dumps({"event_id": f"e{i}", "ts": 1.7e9 + i + 60, "label": str(i % 3 % 2)}), b"c")
        for i in range(n):
            sink.send(pred, orjson.dumps({"event_id": f"e{i}", "ts": 1.7e9 + i, "model": "m", "client_id": f"c{i % 9}",
                                          "features": [float(i % 7), 1.0], "prediction": str(i % 2)}), b"c")
    store = Store(make_engine("sqlite://"))
    totals = run_live(store, MonitorConfig(batch_size=200, checkpoint_every_events=500), settings(kafka_broker),
                      run="live", group=f"g-{unique_name}", predictions_topic=pred, labels_topic=lab, until_idle=3.0)
    assert totals.events == n
    ((_positions, blob),) = store.load_checkpoints("live").values()
    counters = statecodec.decode(blob)["counters"]
    assert counters["labels_matched"] == n // 2 and counters["labels_unmatched"] == 0
    with store.engine.connect() as conn:
        notices = conn.execute(select(alerts.c.detector).where(alerts.c.detector == "data_quality.labels")).all()
    assert not notices


def test_two_consumers_split_partitions_exactly_once(kafka_broker: str, unique_name: str, tmp_path: object) -> None:
    import time

    pred, lab = f"p-{unique_name}", f"l-{unique_name}"
    ensure_topics(kafka_broker, {pred: 4, lab: 4})
    url = f"sqlite:///{tmp_path}/shared.db"
    Store(make_engine(url))
    cfg = MonitorConfig(batch_size=300, checkpoint_every_events=600)
    results: dict[str, object] = {}

    def consume(name: str) -> None:
        store = Store(make_engine(url))
        results[name] = run_live(store, cfg, settings(kafka_broker), run="live", group=f"g-{unique_name}",
                                 predictions_topic=pred, labels_topic=lab, until_idle=15.0, stop=StopFlag())

    threads = [threading.Thread(target=consume, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    time.sleep(6)  # both members join the group (and split the partitions) before traffic starts
    simulate(settings(kafka_broker), predictions_topic=pred, labels_topic=lab, n_events=8000, seed=9, partitions=4)
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    assert set(results) == {"a", "b"}, "a consumer thread failed"
    assert all(r.events > 0 for r in results.values()), "the partitions were not split"  # type: ignore[attr-defined]
    assert sum(r.events for r in results.values()) >= 8000  # type: ignore[attr-defined]
    store = Store(make_engine(url))
    cps = checkpoint_rows(store, "live")
    # every partition has exactly one snapshot, and its positions cover the whole topic
    assert sorted(cps) == [f"partition-{p}" for p in range(4)]
    assert sum(c["events"] for c in cps.values()) == 8000
    ends = Counter({p: v for c in cps.values() for p, v in c.items() if p.startswith(pred)})
    assert sum(ends.values()) == 8000
    # each event counted once in outputs: no flagged event appears twice for one detector
    with store.engine.connect() as conn:
        dup = conn.execute(select(flagged_events.c.event_id, flagged_events.c.detector, func.count())
                           .group_by(flagged_events.c.event_id, flagged_events.c.detector)
                           .having(func.count() > 1)).all()
    assert dup == []


def test_sigterm_finishes_the_batch_checkpoints_and_exits_zero(kafka_broker: str, unique_name: str,
                                                              tmp_path: object) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    pred, lab = f"p-{unique_name}", f"l-{unique_name}"
    simulate(settings(kafka_broker), predictions_topic=pred, labels_topic=lab, n_events=4000, seed=8, partitions=2)
    db = f"sqlite:///{tmp_path}/live.db"
    log = Path(str(tmp_path)) / "run.log"
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--bootstrap", kafka_broker, "--topic", pred,
             "--labels-topic", lab, "--group", f"g-{unique_name}", "--db", db],
            stdout=sink, stderr=subprocess.STDOUT, text=True, env={**os.environ, "INFERSENTRY_LOG_LEVEL": "WARNING"})
    store = Store(make_engine(db))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the consumer has written its first batches
        time.sleep(0.5)
        if count(store, alerts, "live") or checkpoint_rows(store, "live"):
            break
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    output = log.read_text()
    assert proc.returncode == 0, output[-2000:]
    assert "stopped:" in output
    cps = checkpoint_rows(store, "live")
    assert cps and sum(c["events"] for c in cps.values()) > 0
    assert store.run_row("live")["status"] == "stopped"  # type: ignore[index]
    # a restart picks up exactly where the snapshot left off: together, every event once
    rest = run_live(store, MonitorConfig(), settings(kafka_broker), run="live", group=f"g-{unique_name}",
                    predictions_topic=pred, labels_topic=lab, until_idle=3.0)
    assert sum(c["events"] for c in checkpoint_rows(store, "live").values()) == 4000
    assert rest.events == 4000 - sum(c["events"] for c in cps.values())
