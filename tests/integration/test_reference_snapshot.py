"""A Kafka time range frozen into a reference file, against the real local broker.

The topic holds three phases with known broker-time bounds: an older benign period (O), the
reference period (R, benign, plus one malformed and one pretty-printed message) and later traffic
(L). The snapshot of R's range must hold exactly R's valid events, and drive the drift detector
as a reference file of the same events would.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from clichecks import assert_one_line_error

from pipeline.decode import decode_prediction
from pipeline.events import RouteKey
from pipeline.reference import load_reference
from pipeline.reference_snapshot import SnapshotError, sidecar_path, snapshot_reference
from pipeline.routing import learn_schema
from pipeline.sources.kafka import KafkaClientSettings, KafkaSink, ensure_topics
from pipeline.traffic import encode_message, generate, write_jsonl

pytestmark = pytest.mark.kafka

PARTITIONS = 3


@dataclass(frozen=True)
class Topic:
    bootstrap: str
    name: str
    from_ms: int  # start of R
    to_ms: int  # start of L
    reference: list[dict[str, object]]  # R's valid predictions, generator order


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def topic(kafka_broker: str) -> Topic:
    name = f"ref-{time.monotonic_ns():x}"
    ensure_topics(kafka_broker, {name: PARTITIONS})
    older = generate("drift-abrupt", n_events=800, seed=7).predictions
    reference = generate("benign", n_events=3000, seed=1).predictions
    later = generate("benign", n_events=500, seed=9).predictions
    pretty = json.dumps(reference[-1], indent=2).encode()  # a valid event over several lines
    bounds = []
    with KafkaSink(bootstrap=kafka_broker) as sink:
        for phase, messages in (("O", older), ("R", reference[:-1]), ("L", later)):
            time.sleep(0.05)
            bounds.append(_now_ms())
            time.sleep(0.05)
            for m in messages:
                sink.send(name, encode_message(m), str(m.get("client_id")).encode())
            if phase == "R":
                sink.send(name, b'{"event_id": "x", "model": 3', b"bad")  # malformed: left out, counted
                sink.send(name, pretty, b"pretty")
            sink.flush()
    return Topic(kafka_broker, name, bounds[1], bounds[2], reference)


def _settings(t: Topic) -> KafkaClientSettings:
    return KafkaClientSettings(bootstrap_servers=t.bootstrap)


def test_snapshot_holds_exactly_the_ranges_valid_events_one_per_line(topic: Topic, tmp_path: Path) -> None:
    out = tmp_path / "ref.jsonl.gz"
    snap = snapshot_reference(_settings(topic), topic.name, topic.from_ms, topic.to_ms, out)
    lines = gzip.decompress(out.read_bytes()).splitlines()
    ids = [orjson.loads(line)["event_id"] for line in lines]
    assert sorted(ids) == sorted(m["event_id"] for m in topic.reference)
    assert snap.events == len(topic.reference) == 3000 and snap.skipped == 1
    assert snap.models == dict(Counter(str(m["model"]) for m in topic.reference))
    doc = json.loads(sidecar_path(out).read_text())
    assert doc["events"] == 3000 and doc["skipped"] == 1 and doc["sha256"] == snap.sha256
    assert sum(o["end"] - o["start"] for o in doc["offsets"]) == 3001  # the malformed one was in the range
    assert {o["partition"] for o in doc["offsets"]} == set(range(PARTITIONS))


def test_the_same_range_gives_the_same_bytes(topic: Topic, tmp_path: Path) -> None:
    a = snapshot_reference(_settings(topic), topic.name, topic.from_ms, topic.to_ms, tmp_path / "a.jsonl.gz")
    time.sleep(1.1)  # a gzip header carrying the clock would differ now
    b = snapshot_reference(_settings(topic), topic.name, topic.from_ms, topic.to_ms, tmp_path / "b.jsonl.gz")
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    plain = snapshot_reference(_settings(topic), topic.name, topic.from_ms, topic.to_ms, tmp_path / "c.jsonl")
    assert plain.events == 3000 and (tmp_path / "c.jsonl").read_bytes()[:1] == b"{"


def test_snapshot_is_the_same_reference_as_an_archive_of_those_events(topic: Topic, tmp_path: Path) -> None:
    snapshot_reference(_settings(topic), topic.name, topic.from_ms, topic.to_ms, tmp_path / "ref.jsonl.gz")
    archive = generate("benign", n_events=3000, seed=1)
    write_jsonl(archive, tmp_path / "archive.jsonl")
    first = decode_prediction(encode_message(topic.reference[0]))
    route = RouteKey(first.model, first.model_version, 0)
    schema = learn_schema(first)
    snap = load_reference(tmp_path / "ref.jsonl.gz", route, schema)
    arch = load_reference(tmp_path / "archive.jsonl", route, schema)

    def rows(ref: dict[str, np.ndarray]) -> np.ndarray:
        x = np.column_stack([ref["X"], ref["confidence"]])
        return x[np.lexsort(x.T[::-1])]

    assert len(snap["X"]) == 3000
    np.testing.assert_allclose(rows(snap), rows(arch))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_snapshot_then_replay_with_it_finds_the_drift(topic: Topic, tmp_path: Path) -> None:
    r = _cli("reference", "snapshot", "ref.jsonl.gz", "--topic", topic.name, "--from", str(topic.from_ms),
             "--to", str(topic.to_ms), "--bootstrap", topic.bootstrap, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote 3,000 events to ref.jsonl.gz" in r.stdout and "1 invalid messages left out" in r.stdout
    assert f"{topic.name}[0]: offsets" in r.stderr and "fewer than 10,000 events" in r.stderr
    assert "reference_file: ref.jsonl.gz" in r.stdout

    live = generate("drift-abrupt", n_events=4000, seed=2)
    write_jsonl(live, tmp_path / "live.jsonl")
    (tmp_path / "cfg.yaml").write_text("defaults:\n  reference_file: ref.jsonl.gz\n"
                                       "  detectors:\n    drift: {}\n")
    db = f"sqlite:///{tmp_path}/r.db"
    rep = _cli("replay", "live.jsonl", "--config", "cfg.yaml", "--db", db, "--quiet", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    exported = _cli("alerts", "export", "--run", rep.stdout.strip(), "--db", db, cwd=tmp_path)
    alerts = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    drift = [a for a in alerts if a["kind"] == "drift"]
    change = live.truth.change_points[0].ts
    assert drift, "the drift after the change was not found with the snapshot as reference"
    from pipeline.timefmt import parse_ts

    assert min(parse_ts(a["raised_at"])[0] for a in drift) >= change


def test_cli_user_errors_write_nothing(topic: Topic, tmp_path: Path) -> None:
    base = ("reference", "snapshot", "--topic", topic.name, "--bootstrap", topic.bootstrap)
    (tmp_path / "taken.jsonl").write_text("keep me\n")
    assert_one_line_error(_cli(*base, "taken.jsonl", "--from", str(topic.from_ms), "--to", str(topic.to_ms), cwd=tmp_path),
                    "exists", "never overwritten")
    assert (tmp_path / "taken.jsonl").read_text() == "keep me\n"
    assert_one_line_error(_cli(*base, "empty.jsonl", "--from", "1000", "--to", "2000", cwd=tmp_path), "no valid prediction")
    assert_one_line_error(_cli(*base, "x.jsonl", "--from", "soon", "--to", "2000", cwd=tmp_path), "RFC 3339")
    assert_one_line_error(_cli("reference", "snapshot", "y.jsonl", "--topic", f"nope-{topic.name}", "--bootstrap",
                         topic.bootstrap, "--from", "0", "--to", "1", cwd=tmp_path), "unknown topic")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.jsonl"]


def test_from_after_to_is_refused(topic: Topic, tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="after"):
        snapshot_reference(_settings(topic), topic.name, topic.to_ms, topic.from_ms, tmp_path / "r.jsonl")
