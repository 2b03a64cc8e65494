"""Kafka time-range replay against the real local broker and a real database.

One stream is produced once per module, in three phases separated by short pauses, so that the
broker timestamps of the middle phase (B) form a known range: A < from <= B < to <= C.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from clichecks import assert_one_line_error
from sqlalchemy import select

from pipeline.config import MonitorConfig
from pipeline.kafka_replay import KafkaRange, replay_kafka
from pipeline.memory import RobustClock
from pipeline.replay import replay_file
from pipeline.sources.kafka import KafkaClientSettings, KafkaSink, KafkaSource, ensure_topics, list_topics
from pipeline.sources.kafka_range import KafkaRangeReader, PartitionRange
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.storage.tables import checkpoints, runs
from pipeline.timefmt import parse_ts
from pipeline.traffic import encode_message, iter_events

pytestmark = pytest.mark.kafka

PARTITIONS = 3
CONFIG = MonitorConfig(batch_size=500, checkpoint_every_events=1500)


@dataclass(frozen=True)
class Phases:
    bootstrap: str
    preds: str
    labels: str
    from_ms: int
    to_ms: int
    ids: dict[str, set[str]]  # phase -> prediction event ids
    b_preds: list[bytes]  # phase B, generator order
    b_labels: list[bytes]


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def phases(kafka_broker: str) -> Phases:
    name = f"{time.monotonic_ns():x}"
    preds, labels = f"kr-p-{name}", f"kr-l-{name}"
    ensure_topics(kafka_broker, {preds: PARTITIONS, labels: PARTITIONS})
    events = list(iter_events("mixed", n_events=10_000, seed=21))
    cuts, seen = [], 0
    for i, (stream, _) in enumerate(events):
        seen += stream == "prediction"
        if seen in (1500, 8500) and stream == "prediction":
            cuts.append(i + 1)
    chunks = {"A": events[:cuts[0]], "B": events[cuts[0]:cuts[1]], "C": events[cuts[1]:]}
    bounds: dict[str, int] = {}
    ids: dict[str, set[str]] = {}
    b_preds: list[bytes] = []
    b_labels: list[bytes] = []
    with KafkaSink(bootstrap=kafka_broker) as sink:
        for phase, chunk in chunks.items():
            time.sleep(0.05)
            bounds[phase] = _now_ms()
            time.sleep(0.05)
            for stream, msg in chunk:
                value = encode_message(msg)
                key = str(msg.get("client_id") or msg.get("model")).encode()
                sink.send(preds if stream == "prediction" else labels, value, key)
                if phase == "B":
                    (b_preds if stream == "prediction" else b_labels).append(value)
            sink.flush()
            ids[phase] = {m["event_id"] for s, m in chunk if s == "prediction"}
    return Phases(kafka_broker, preds, labels, bounds["B"], bounds["C"], ids, b_preds, b_labels)


def _settings(bootstrap: str) -> KafkaClientSettings:
    return KafkaClientSettings(bootstrap_servers=bootstrap)


def _replay(store: Store, ph: Phases, labels: bool = True, **kw: Any) -> Any:
    return replay_kafka(store, CONFIG, _settings(ph.bootstrap), predictions_topic=ph.preds,
                        labels_topic=ph.labels if labels else None, from_ms=ph.from_ms, to_ms=ph.to_ms, **kw)


def _alerts(store: Store, run: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "run"} for a in store.iter_alerts(run)]


def _read(bootstrap: str, rng: PartitionRange) -> list[tuple[int, bytes]]:
    with KafkaRangeReader(_settings(bootstrap)) as reader:
        its = reader.read([rng], {})
        return [(m.offset, m.value) for it in its.values() for m in it]


def _event_id(value: bytes) -> str:
    return str(orjson.loads(value)["event_id"])


def test_replays_exactly_the_range_and_records_its_offsets(phases: Phases, db_url: str) -> None:
    store = Store(make_engine(db_url))
    summary = _replay(store, phases)
    b = phases.ids["B"]
    assert summary.totals.events == len(b) == 7000
    assert summary.totals.dead_letters == 0
    rng: KafkaRange = summary.range
    pred_ranges = [r for r in rng.ranges if r.topic == phases.preds]
    assert len(pred_ranges) == PARTITIONS and sum(r.size for r in pred_ranges) == len(b)
    # the boundaries: first and last offset of every partition are B; the ones just outside are A and C
    for r in pred_ranges:
        inside = _read(phases.bootstrap, PartitionRange(r.topic, r.partition, max(0, r.start - 1), r.end + 1))
        by_offset = {o: _event_id(v) for o, v in inside}
        assert by_offset[r.start] in b and by_offset[r.end - 1] in b
        if r.start > 0:
            assert by_offset[r.start - 1] in phases.ids["A"]
        assert by_offset[r.end] in phases.ids["C"]
    with store.engine.connect() as conn:
        row = conn.execute(select(runs).where(runs.c.run == summary.run)).mappings().one()
        positions: dict[str, int] = {}
        for cp in conn.execute(select(checkpoints).where(checkpoints.c.run == summary.run)).mappings():
            positions.update(orjson.loads(cp["positions"]))
    assert row["status"] == "finished" and row["events"] == len(b) and row["kind"] == "replay"
    assert row["input_fingerprint"] == rng.fingerprint()
    for r in rng.ranges:  # the run states the exact offsets, and its checkpoint ends there
        assert f"{r.partition}:{r.start}-{r.end}" in row["source"]
        if r.size:
            assert positions[f"{r.topic}:{r.partition}"] == r.end
    assert summary.run.startswith("replay-kafka-") and len(_alerts(store, summary.run)) > 0


def _merged_order(bootstrap: str, ranges: list[PartitionRange]) -> list[bytes]:
    """Independent oracle of the replay order of one topic: each partition keyed by its own
    robust clock, ties by partition, then sorted (the keys are monotone per partition)."""
    keyed: list[tuple[float, int, int, bytes]] = []
    for r in ranges:
        clock = RobustClock()
        for offset, value in _read(bootstrap, r):
            key = clock.update(parse_ts(orjson.loads(value)["ts"])[0])
            keyed.append((key, r.partition, offset, value))
    return [v for *_, v in sorted(keyed)]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(v + b"\n" for v in lines))
    return path


def test_partitions_read_interleaved_are_read_to_their_end(phases: Phases) -> None:
    """A merge pulls a few messages from one partition, then from another. Every partition must still
    be read to its end offset: records a poll leaves behind are lost to a paused partition, which
    once stalled every partition at offset 2,000 (the old per-poll cap) on real volumes."""
    with KafkaRangeReader(_settings(phases.bootstrap)) as reader:
        ranges = reader.resolve([phases.preds, phases.labels], 0, _now_ms())
        assert max(r.size for r in ranges) > 2000  # more than the old cap, so the test means something
        live = dict(reader.read(ranges, {}))
        counts = dict.fromkeys(live, 0)
        while live:
            for r in list(live):
                for _ in range(25):
                    if next(live[r], None) is None:
                        del live[r]
                        break
                    counts[r] += 1
    assert all(counts[r] == r.size for r in counts), {(r.topic, r.partition): (counts[r], r.size) for r in counts}


def test_alerts_equal_those_of_a_file_replay_of_the_same_events(phases: Phases, tmp_path: Path) -> None:
    store = Store(make_engine(f"sqlite:///{tmp_path}/k.db"))
    summary = _replay(store, phases)
    ranges = list(summary.range.ranges)
    p_file = _write(tmp_path / "p.jsonl", _merged_order(phases.bootstrap, [r for r in ranges if r.topic == phases.preds]))
    l_file = _write(tmp_path / "l.jsonl", _merged_order(phases.bootstrap, [r for r in ranges if r.topic == phases.labels]))
    assert sorted(p_file.read_bytes().splitlines()) == sorted(phases.b_preds)  # the same events as produced
    assert sorted(l_file.read_bytes().splitlines()) == sorted(phases.b_labels)
    file_run = replay_file(store, CONFIG, p_file, l_file, run="file").run
    kafka_alerts, file_alerts = _alerts(store, summary.run), _alerts(store, file_run)
    assert len(kafka_alerts) > 0
    assert [a["alert_id"] for a in kafka_alerts] == [a["alert_id"] for a in file_alerts]
    assert kafka_alerts == file_alerts


def test_per_partition_replay_reproduces_a_live_run_of_the_same_messages(phases: Phases, tmp_path: Path) -> None:
    """A live consumer group that read the topic from its start and a ``--per-partition`` replay of
    the whole topic keep the same per-partition state, so they raise the same alerts; merging the
    partitions (the default, as one archived file) is a different stream to the detectors."""
    from pipeline.live import run_live

    live = Store(make_engine(f"sqlite:///{tmp_path}/live.db"))
    totals = run_live(live, CONFIG, _settings(phases.bootstrap), run="live", group=f"g-{phases.preds}",
                      predictions_topic=phases.preds, labels_topic=None, until_idle=3.0)
    assert totals.events == sum(len(v) for v in phases.ids.values())
    replay = Store(make_engine(f"sqlite:///{tmp_path}/replay.db"))
    per_partition = replay_kafka(replay, CONFIG, _settings(phases.bootstrap), predictions_topic=phases.preds,
                                 labels_topic=None, from_ms=0, to_ms=_now_ms(), per_partition=True)
    merged = replay_kafka(replay, CONFIG, _settings(phases.bootstrap), predictions_topic=phases.preds,
                          labels_topic=None, from_ms=0, to_ms=_now_ms())
    assert per_partition.run != merged.run  # the scope layout is part of the run's fingerprint
    assert "one scope per partition" in per_partition.range.describe(phases.bootstrap)

    def by_id(store: Store, run: str) -> list[dict[str, Any]]:
        return sorted(_alerts(store, run), key=lambda a: a["alert_id"])

    live_alerts = by_id(live, "live")
    assert len(live_alerts) > 0
    assert by_id(replay, per_partition.run) == live_alerts
    assert [a["alert_id"] for a in by_id(replay, merged.run)] != [a["alert_id"] for a in live_alerts]


def test_same_range_twice_is_the_same_run_with_the_same_alerts(phases: Phases, tmp_path: Path) -> None:
    first = Store(make_engine(f"sqlite:///{tmp_path}/a.db"))
    one = _replay(first, phases)
    again = _replay(first, phases)
    assert again.run == one.run and again.already_complete
    other = Store(make_engine(f"sqlite:///{tmp_path}/b.db"))  # from scratch, elsewhere
    two = _replay(other, phases)
    assert two.run == one.run and not two.already_complete
    assert _alerts(first, one.run) == _alerts(other, two.run)
    without_labels = _replay(other, phases, labels=False)
    assert without_labels.run != one.run  # other input, other fingerprint


def test_an_interrupted_replay_starts_over_to_the_same_result(phases: Phases, tmp_path: Path) -> None:
    clean = Store(make_engine(f"sqlite:///{tmp_path}/clean.db"))
    want = _replay(clean, phases)
    store = Store(make_engine(f"sqlite:///{tmp_path}/cut.db"))

    class Crash(Exception):
        pass

    def crash(done: int, *_: object) -> None:
        if done >= 4000:
            raise Crash

    with pytest.raises(Crash):
        _replay(store, phases, on_batch=crash)
    assert store.run_row(want.run)["status"] == "failed"  # type: ignore[index]  # marked, not left "running"
    got = _replay(store, phases)
    assert got.run == want.run and not got.already_complete
    assert _alerts(store, got.run) == _alerts(clean, want.run)
    assert store.run_row(got.run)["events"] == 7000  # type: ignore[index]


def test_the_live_groups_offsets_are_untouched(phases: Phases, tmp_path: Path) -> None:
    group = f"live-{phases.preds}"
    with KafkaSource(bootstrap=phases.bootstrap, group_id=group, predictions_topic=phases.preds,
                     labels_topic=phases.labels, session_timeout_ms=10_000, heartbeat_interval_ms=1_000) as src:
        deadline = time.monotonic() + 30
        while not src.assignment() and time.monotonic() < deadline:
            src.poll(max_records=1, timeout_ms=200)
            src.take_rebalance_events()
        wanted = {(t, p): 7 + p for t, p in src.assignment()}
        assert len(wanted) == 2 * PARTITIONS
        src.commit(wanted)
        before = {tp: src.committed(*tp) for tp in wanted}
    assert before == wanted
    groups_before = _groups(phases.bootstrap)
    assert group in groups_before
    _replay(Store(make_engine(f"sqlite:///{tmp_path}/x.db")), phases)
    assert _groups(phases.bootstrap) == groups_before  # the replay joined no group of its own
    with KafkaSource(bootstrap=phases.bootstrap, group_id=group, predictions_topic=phases.preds,
                     labels_topic=phases.labels) as src:
        after = {tp: src.committed(*tp) for tp in wanted}
    assert after == before


def _groups(bootstrap: str) -> set[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {str(g["group_id"]) for g in admin.list_groups()}
    finally:
        admin.close()


def test_an_empty_range_replays_nothing(phases: Phases, tmp_path: Path) -> None:
    store = Store(make_engine(f"sqlite:///{tmp_path}/e.db"))
    summary = replay_kafka(store, CONFIG, _settings(phases.bootstrap), predictions_topic=phases.preds,
                           labels_topic=phases.labels, from_ms=1000, to_ms=2000)
    assert summary.run is None and summary.range.size == 0
    assert list(store.iter_alerts()) == []


# -- the command line ------------------------------------------------------------------------
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", "replay", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_replays_a_range_given_as_rfc3339_or_epoch_ms(phases: Phases, tmp_path: Path) -> None:
    from pipeline.timefmt import rfc3339_ms

    db = f"sqlite:///{tmp_path}/c.db"
    base = ("--kafka", "--topic", phases.preds, "--labels-topic", phases.labels, "--bootstrap", phases.bootstrap,
            "--db", db)
    r = cli(*base, "--from", str(phases.from_ms), "--to", str(phases.to_ms), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "7,000 events scored" in r.stdout and f"{phases.preds}[0]: offsets" in r.stderr
    q = cli(*base, "--from", rfc3339_ms(phases.from_ms / 1000), "--to", rfc3339_ms(phases.to_ms / 1000), "--quiet",
            cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    run = q.stdout.strip()
    assert run.startswith("replay-kafka-") and f"run {run}" in r.stdout


def test_cli_user_errors(phases: Phases, tmp_path: Path) -> None:
    b = ("--bootstrap", phases.bootstrap, "--db", f"sqlite:///{tmp_path}/u.db")
    assert_one_line_error(cli("--kafka", *b, "--from", "2026-11-18T12:00:00Z", "--to", "2026-11-18T11:00:00Z", cwd=tmp_path),
                    "--from", "after --to")
    assert_one_line_error(cli("--kafka", *b, "--from", "yesterday", "--to", "1", cwd=tmp_path), "RFC 3339")
    assert_one_line_error(cli("--kafka", *b, "--from", "0", cwd=tmp_path), "--from and --to")
    assert_one_line_error(cli("--kafka", "f.jsonl", *b, "--from", "0", "--to", "1", cwd=tmp_path), "no FILE")
    assert_one_line_error(cli(*b, cwd=tmp_path), "FILE")
    (tmp_path / "f.jsonl").write_text("")
    assert_one_line_error(cli("f.jsonl", "--topic", phases.preds, *b, cwd=tmp_path), "need --kafka")
    missing = f"no-such-topic-{phases.preds}"
    assert_one_line_error(cli("--kafka", "--topic", missing, *b, "--from", "0", "--to", "1", cwd=tmp_path),
                    "unknown topic", missing)
    assert missing not in list_topics(phases.bootstrap)  # asking did not create it
    assert_one_line_error(cli("--kafka", "--topic", phases.preds, "--labels-topic", missing, *b, "--from", "0", "--to", "1",
                        cwd=tmp_path), "unknown topic", missing)


def test_cli_unreachable_broker_fails_within_the_timeout(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    r = cli("--kafka", "--bootstrap", f"127.0.0.1:{port}", "--timeout", "2", "--from", "0", "--to", "1",
            "--db", f"sqlite:///{tmp_path}/n.db", cwd=tmp_path)
    assert_one_line_error(r, "unreachable", f"127.0.0.1:{port}")
    assert time.monotonic() - start < 20


def test_cli_empty_range_is_a_notice_and_exit_0(phases: Phases, tmp_path: Path) -> None:
    r = cli("--kafka", "--topic", phases.preds, "--bootstrap", phases.bootstrap, "--from", "1000", "--to", "2000",
            "--db", f"sqlite:///{tmp_path}/e.db", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "nothing to replay" in r.stderr and r.stdout == ""
