from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fakes import config, stream
from sqlalchemy import func, select, update

from pipeline.engine import BatchResult, Engine
from pipeline.events import RawMessage
from pipeline.replay import ReplayInputError, replay_file
from pipeline.rows import export_line
from pipeline.runner import Pipeline
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.storage.tables import (
    ALL_TABLES,
    alerts,
    checkpoints,
    dead_letters,
    flagged_events,
    window_stats,
)


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in ALL_TABLES}


def test_migrations_are_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    Store(engine)
    Store(engine)
    assert set(counts(Store(engine))) == {t.name for t in ALL_TABLES}


def test_a_database_at_the_first_revision_upgrades_and_keeps_its_runs(db_url: str, tmp_path: Path) -> None:
    from alembic import command

    from pipeline.storage.db import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql("INSERT INTO runs (run, kind, source, config_hash, config_json, version, status, events, "
                             "dead_letters) VALUES ('old', 'replay', 'f', 'h', '{}', '0', 'finished', 5, 0)")
    store = Store(engine)  # upgrades to the newest revision
    assert store.run_row("old")["duplicates"] is None  # type: ignore[index]  # not counted back then
    data = tmp_path / "p.jsonl"
    lines = [m.value for m in stream(600) if m.stream == "predictions" and b"broken" not in m.value]
    lines += lines[-3:]  # three more redeliveries (the stream has a few of its own)
    data.write_bytes(b"\n".join(lines) + b"\n")
    redelivered = len(lines) - len({orjson.loads(v)["event_id"] for v in lines})
    replay_file(store, config(), data, run="new")
    assert redelivered >= 3 and store.run_row("new")["duplicates"] == redelivered  # type: ignore[index]


def test_replaying_a_finished_run_again_leaves_it_as_it_was(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_bytes(b"\n".join(m.value for m in stream(800) if m.stream == "predictions") + b"\n")
    store = Store(make_engine(db_url))
    first = replay_file(store, config(), data, run="audit")
    before = store.run_row("audit")
    again = replay_file(store, config(), data, run="audit")
    assert not first.already_complete and again.already_complete
    assert store.run_row("audit") == before  # status, counters and the original finish time
    other = tmp_path / "q.jsonl"
    other.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])
    with pytest.raises(ReplayInputError):
        replay_file(store, config(), other, run="audit")
    assert store.run_row("audit") == before  # refused, and the finished run is not left "running"


def test_a_run_name_is_bound_to_its_config(db_url: str, tmp_path: Path) -> None:
    """Resuming or re-running a replay under another config is refused: one run, one config."""
    data = tmp_path / "p.jsonl"
    data.write_bytes(b"\n".join(m.value for m in stream(800) if m.stream == "predictions") + b"\n")
    store = Store(make_engine(db_url))
    replay_file(store, config(), data, run="audit", stop_after_batches=0)  # interrupted before its first batch
    started = store.run_row("audit")
    assert started is not None and started["status"] == "running"
    other = config(batch_size=100)
    with pytest.raises(ReplayInputError, match=f"config {started['config_hash']}.*choose another --run"):
        replay_file(store, other, data, run="audit")
    assert store.run_row("audit") == started
    replay_file(store, config(), data, run="audit")  # the same config resumes and finishes
    done = store.run_row("audit")
    assert done is not None and done["status"] == "finished"
    with pytest.raises(ReplayInputError, match="config"):
        replay_file(store, other, data, run="audit")
    assert store.run_row("audit") == done  # refused, not "already complete", and left as it was
    assert replay_file(store, other, data, run="audit-2").run == "audit-2"


def test_a_replay_that_fails_is_marked_failed_and_resumes(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_bytes(b"\n".join(m.value for m in stream(800) if m.stream == "predictions") + b"\n")
    store = Store(make_engine(db_url))
    calls = 0
    real = Pipeline.process

    def failing(self: Pipeline, batch: list[RawMessage], force_checkpoint: bool = False) -> BatchResult:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk on fire")
        return real(self, batch, force_checkpoint)

    Pipeline.process = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            replay_file(store, config(batch_size=300, checkpoint_every_events=300), data, run="r")
    finally:
        Pipeline.process = real  # type: ignore[method-assign]
    row = store.run_row("r")
    assert row is not None and row["status"] == "failed" and row["finished_at"] is not None
    again = replay_file(store, config(batch_size=300, checkpoint_every_events=300), data, run="r")
    assert again.resumed and store.run_row("r")["status"] == "finished"  # type: ignore[index]


def test_a_retried_batch_writes_nothing_twice(db_url: str) -> None:
    store = Store(make_engine(db_url))
    result = Engine(config(), "r1").process(stream(1500))
    assert result.alerts and result.flagged and result.stats and result.dead_letters
    store.write("r1", result)
    first = counts(store)
    store.write("r1", result)
    assert counts(store) == first
    assert first["alerts"] == len(result.alerts) and first["dead_letters"] == len(result.dead_letters)


def test_runs_are_kept_apart(db_url: str) -> None:
    store = Store(make_engine(db_url))
    store.write("a", Engine(config(), "a").process(stream(600)))
    store.write("b", Engine(config(), "b").process(stream(600)))
    with store.engine.connect() as conn:
        per_run = dict(conn.execute(select(alerts.c.run, func.count()).group_by(alerts.c.run)).all())
    assert per_run["a"] == per_run["b"] > 0


def test_alert_update_never_touches_reviewer_status(db_url: str) -> None:
    store = Store(make_engine(db_url))
    result = Engine(config(), "r").process(stream(600))
    store.write("r", result)
    row = dict(result.alerts[0])
    with store.engine.begin() as conn:
        conn.execute(update(alerts).where(alerts.c.alert_id == row["alert_id"]).values(status="confirmed"))
    upd = {**row, "window_end": "2030-01-01T00:00:00.000Z", "window_end_ts": 1.9e9, "status": "open"}
    result.alerts, result.alert_updates = [row], [upd]
    store.write("r", result)
    with store.engine.connect() as conn:
        got = conn.execute(select(alerts).where(alerts.c.alert_id == row["alert_id"])).mappings().one()
    assert got["status"] == "confirmed" and got["window_end"] == "2030-01-01T00:00:00.000Z"
    assert got["raised_at"] == row["raised_at"]


def test_checkpoint_written_with_batch(db_url: str) -> None:
    store = Store(make_engine(db_url))
    pipe = Pipeline(store, config(checkpoint_every_events=100), "r", "replay", "test")
    pipe.process(stream(300))
    with store.engine.connect() as conn:
        cp = conn.execute(select(checkpoints)).mappings().one()
    assert cp["scope"] == "partition-0" and cp["events"] > 0
    assert orjson.loads(cp["positions"])["t-predictions:0"] > 0
    restored = Pipeline(store, config(checkpoint_every_events=100), "r", "replay", "test")
    positions = restored.restore()
    assert positions == orjson.loads(cp["positions"])
    assert restored.engine.scope(0).events == cp["events"]


def _write_stream(path: Path, n: int) -> None:
    with open(path, "wb") as fh:
        for m in stream(n):
            if m.stream == "predictions":
                fh.write(m.value + b"\n")


def test_crash_and_resume_gives_the_same_rows(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    _write_stream(data, 3000)
    cfg = config(batch_size=200, checkpoint_every_events=700)
    clean = Store(make_engine(f"sqlite:///{tmp_path}/clean.db"))
    replay_file(clean, cfg, data, run="x")
    store = Store(make_engine(db_url))
    summary = replay_file(store, cfg, data, run="x", stop_after_batches=9)  # "crash" after 9 batches
    assert not summary.already_complete
    resumed = replay_file(store, cfg, data, run="x")
    assert resumed.resumed
    for table in (alerts, flagged_events, window_stats, dead_letters):
        assert _rows(store, table) == _rows(clean, table), table.name
    assert [export_line(a) for a in store.iter_alerts("x")] == [export_line(a) for a in clean.iter_alerts("x")]
    run_row, clean_row = store.run_row("x"), clean.run_row("x")
    assert run_row and clean_row and run_row["status"] == clean_row["status"] == "finished"
    assert run_row["events"] == clean_row["events"] == 3001  # 3,000 + one event with another schema
    assert run_row["dead_letters"] == len(_rows(store, dead_letters)) > 0


def _rows(store: Store, table: object) -> list[tuple[object, ...]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(table)).all()  # type: ignore[call-overload]
    return sorted(tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows)


def test_a_late_snapshot_never_replaces_a_newer_one(db_url: str) -> None:
    from pipeline.engine import BatchResult

    store = Store(make_engine(db_url))
    snap = {"scope": "partition-0", "state": b"new", "events": 10, "last_event_ts": 1.0}
    store.write("r", BatchResult(), [{**snap, "positions": {"p:0": 10, "l:0": 4}}])
    store.write("r", BatchResult(), [{**snap, "state": b"old", "positions": {"p:0": 6, "l:0": 4}}])
    assert store.load_checkpoints("r")["partition-0"] == ({"p:0": 10, "l:0": 4}, b"new")
    store.write("r", BatchResult(), [{**snap, "state": b"newer", "positions": {"p:0": 12, "l:0": 4}}])
    assert store.load_checkpoints("r")["partition-0"][1] == b"newer"
