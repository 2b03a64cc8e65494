"""The command line as scripts use it: a real subprocess, real files, real databases."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.traffic import generate, write_jsonl

CONTRACT_KEYS = ["alert_id", "kind", "detector", "model", "model_version", "client_id", "raised_at",
                 "trigger_event_id", "window_start", "window_end", "updated_at", "event_ids", "score", "threshold",
                 "severity", "status", "explanation", "run"]
KINDS = {"drift", "performance", "adversarial", "outlier", "attack_campaign", "extraction", "data_quality"}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("stream")
    traffic = generate("mixed", n_events=12_000, seed=11)
    preds, labels = d / "p.jsonl.gz", d / "l.jsonl.gz"
    write_jsonl(traffic, preds, labels)
    with gzip.open(preds, "ab") as fh:  # hostile lines must not stop the replay
        fh.write(b'{"event_id": "bad", "ts": NaN}\n\xff\xfe\n')
    return preds, labels


def test_replay_then_export_gives_valid_v1_alerts(tmp_path: Path, stream_files: tuple[Path, Path]) -> None:
    preds, labels = stream_files
    r = cli("replay", str(preds), "--labels", str(labels), "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = r.stdout.strip()
    assert run.startswith("replay-")
    assert (tmp_path / "infersentry.db").exists()  # the embedded default
    out = cli("alerts", "export", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines
    keys_seen = set()
    previous = ("", "")
    for line in lines:
        a = json.loads(line)
        assert list(a) == CONTRACT_KEYS
        assert a["kind"] in KINDS and a["severity"] in {"info", "warning", "critical"} and a["status"] == "open"
        assert a["run"] == run and isinstance(a["event_ids"], list) and isinstance(a["explanation"], dict)
        assert a["raised_at"].endswith("Z") and len(a["raised_at"]) == 24
        if a["kind"] in ("adversarial", "outlier"):
            assert a["event_ids"] == [a["trigger_event_id"]]
        assert (a["raised_at"], a["alert_id"]) >= previous
        previous = (a["raised_at"], a["alert_id"])
        keys_seen.add(a["alert_id"])
    assert len(keys_seen) == len(lines)


def test_two_replays_export_byte_identical_on_sqlite_and_postgres(tmp_path: Path, stream_files: tuple[Path, Path],
                                                                  pg_url: str) -> None:
    preds, labels = stream_files
    exports = []
    for i, db in enumerate([f"sqlite:///{tmp_path}/a.db", pg_url, f"sqlite:///{tmp_path}/b.db"]):
        r = cli("replay", str(preds), "--labels", str(labels), "--quiet", "--db", db, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        out = tmp_path / f"export{i}.jsonl"
        e = cli("alerts", "export", "--db", db, "--out", str(out), cwd=tmp_path)
        assert e.returncode == 0, e.stderr
        exports.append(out.read_bytes())
    assert exports[0] and exports[0] == exports[1] == exports[2]


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    for args, needle in [
        (("replay", "missing.jsonl"), "no such file"),
        (("alerts", "export", "--run", "nope"), "no run named 'nope'"),
        (("replay", "x.jsonl", "--config", "missing.yml"), "config file not found"),
        (("alerts", "list", "--db", "notaurl"), "invalid database URL"),
    ]:
        (tmp_path / "x.jsonl").write_text("")
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_usage_errors_exit_2_with_a_usage_line_not_a_traceback(tmp_path: Path) -> None:
    for args, needle in [(("replay", "--bogus"), "No such option: --bogus"),
                         (("nosuch",), "No such command 'nosuch'"),
                         (("db", "create-reader"), "Missing argument")]:
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Usage:" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_bad_config_is_reported(tmp_path: Path, stream_files: tuple[Path, Path]) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("batch_size: -3\n")
    r = cli("replay", str(stream_files[0]), "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2 and "batch_size" in r.stderr


def test_help_documents_the_contract_commands(tmp_path: Path) -> None:
    r = cli("--help", cwd=tmp_path)
    for command in ("demo", "replay", "alerts", "run", "simulate", "dev"):
        assert command in r.stdout


def test_replay_killed_mid_stream_resumes_to_the_same_export(tmp_path: Path) -> None:
    """SIGKILL (no chance to clean up) after some checkpoints; the rerun resumes and matches a clean run."""
    import os
    import signal
    import sqlite3
    import time

    traffic = generate("mixed", n_events=40_000, seed=12)
    preds, labels = tmp_path / "p.jsonl", tmp_path / "l.jsonl"
    write_jsonl(traffic, preds, labels)
    cfg = tmp_path / "c.yml"
    cfg.write_text("batch_size: 500\ncheckpoint_every_events: 4000\n")
    args = ("replay", str(preds), "--labels", str(labels), "--config", str(cfg), "--run", "audit", "--quiet")
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    assert cli(*args, cwd=clean_dir).returncode == 0
    clean = cli("alerts", "export", cwd=clean_dir).stdout

    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=killed_dir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = killed_dir / "infersentry.db"
    deadline = time.monotonic() + 300
    checkpointed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    checkpointed = conn.execute("select coalesce(sum(events), 0) from checkpoints").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if checkpointed >= 12_000:
                break
    assert proc.poll() is None, "the replay finished before it could be killed; make the stream longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < checkpointed < 40_000
    resumed = cli(*args, cwd=killed_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert cli("alerts", "export", cwd=killed_dir).stdout == clean


def test_exit_status_of_a_command_is_kept(tmp_path: Path) -> None:
    """``typer.Exit(n)`` inside a command exits n (``dev kafka status`` of a stopped broker: 1)."""
    r = cli("dev", "kafka", "status", "--port", "1", "--data-dir", str(tmp_path / "no-broker"), cwd=tmp_path)
    assert r.returncode == 1 and "stopped" in r.stdout, (r.stdout, r.stderr)


def test_run_that_loses_its_database_exits_with_one_line_and_marks_the_run_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A database outage longer than the store's retry budget ends ``run`` with one clear line (not a
    traceback) and a non-zero status, so a supervisor restarts it; the run is marked ``failed``."""
    from sqlalchemy.exc import OperationalError

    import pipeline.live
    from pipeline.cli import main
    from pipeline.storage.db import make_engine
    from pipeline.storage.store import Store

    def lose_the_database(store: Store, *args: object, run: str, **kw: object) -> None:
        store.start_run(run, "live", "kafka://test", None, "h", "{}", "0")
        raise OperationalError("INSERT INTO alerts ...", {}, Exception('connection to server at "db" failed: refused'))

    monkeypatch.setattr(pipeline.live, "run_live", lose_the_database)
    db = f"sqlite:///{tmp_path}/x.db"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--db", db, "--run", "r1", "--bootstrap", "127.0.0.1:1"])
    assert exit_info.value.code != 0
    out = capsys.readouterr().err
    assert "database unavailable" in out and "refused" in out and "Traceback" not in out
    assert Store(make_engine(db)).run_row("r1")["status"] == "failed"  # type: ignore[index]


# -- first-time-user polish: alerts list/review, progress, --version, simulate --help ------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, stream_files: tuple[Path, Path]
             ) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    """The same stream replayed as runs ``a`` (with the progress bar) and ``b``: every alert id is in both."""
    d = tmp_path_factory.mktemp("two-runs")
    preds, labels = stream_files
    db = f"sqlite:///{d}/two.db"
    first = cli("replay", str(preds), "--labels", str(labels), "--run", "a", "--db", db, cwd=d)
    assert first.returncode == 0, first.stderr
    second = cli("replay", str(preds), "--labels", str(labels), "--run", "b", "--quiet", "--db", db, cwd=d)
    assert second.returncode == 0, second.stderr
    return d, db, first


def test_alerts_list_rejects_an_unknown_kind_or_status_naming_the_valid_ones(tmp_path: Path) -> None:
    from clichecks import assert_one_line_error

    r = cli("alerts", "list", "--kind", "campaign", cwd=tmp_path)
    assert_one_line_error(r, "'campaign'", "did you mean attack_campaign?", *sorted(KINDS))
    r = cli("alerts", "list", "--status", "closed", cwd=tmp_path)
    assert_one_line_error(r, "'closed'", "open, acknowledged, confirmed, false_positive, resolved")
    r = cli("alerts", "review", "0123", "--status", "fixed", cwd=tmp_path)
    assert_one_line_error(r, "'fixed'", "false_positive")


def test_alerts_list_says_when_limit_hides_alerts_and_never_wraps_the_id(
        two_runs: tuple[Path, str, subprocess.CompletedProcess[str]]) -> None:
    import os

    d, db, _ = two_runs
    ids = [json.loads(line)["alert_id"] for line in cli("alerts", "export", "--run", "a", "--db", db, cwd=d).stdout.splitlines()]
    r = subprocess.run([sys.executable, "-m", "pipeline", "alerts", "list", "--run", "a", "--limit", "2", "--db", db],
                       cwd=d, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert f"showing the newest 2 of {len(ids)} alerts in a (--limit)" in r.stdout
    for alert_id in ids[-2:]:  # the newest two, each id whole on one line at 80 columns
        assert alert_id[:12] in r.stdout, r.stdout
    r = cli("alerts", "list", "--run", "a", "--kind", "drift", "--db", db, cwd=d)
    assert r.returncode == 0 and "showing" not in r.stdout and "1 alert in a" in r.stdout, r.stdout


def test_alerts_review_of_an_id_in_several_runs_names_them_and_asks_for_run(
        two_runs: tuple[Path, str, subprocess.CompletedProcess[str]]) -> None:
    from clichecks import assert_one_line_error

    d, db, _ = two_runs
    alert_id = json.loads(cli("alerts", "export", "--run", "a", "--db", db, cwd=d).stdout.splitlines()[0])["alert_id"]
    r = cli("alerts", "review", alert_id[:12], "--status", "confirmed", "--db", db, cwd=d)
    assert_one_line_error(r, f"alert {alert_id} is in 2 runs (a, b): give --run")
    r = cli("alerts", "review", alert_id[:12], "--status", "confirmed", "--run", "b", "--db", db, cwd=d)
    assert r.returncode == 0 and f"{alert_id} in b: confirmed" in r.stdout, r.stderr


def test_ambiguous_alert_prefix_asks_for_a_longer_id_and_run_when_needed() -> None:
    from pipeline.cli import _ambiguous_alert

    assert _ambiguous_alert("ab", [("a", "ab1"), ("a", "ab2")]) == "2 alert ids start with 'ab' (ab1, ab2): give a longer id"
    assert _ambiguous_alert("ab", [("a", "ab1"), ("b", "ab1"), ("a", "ab2")]) == (
        "2 alert ids start with 'ab' (ab1, ab2): give a longer id and --run (they are in runs a, b)")


def test_a_finished_or_already_complete_replay_shows_its_progress_at_100_percent(
        two_runs: tuple[Path, str, subprocess.CompletedProcess[str]], stream_files: tuple[Path, Path]) -> None:
    d, db, first = two_runs
    assert "100%" in first.stderr and "99%" not in first.stderr, first.stderr
    preds, labels = stream_files
    again = cli("replay", str(preds), "--labels", str(labels), "--run", "a", "--db", db, cwd=d)
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr
    assert "100%" in again.stderr and " 0%" not in again.stderr, again.stderr


def test_summaries_are_cut_at_a_word_boundary_with_an_ellipsis() -> None:
    from pipeline.cli import _shorten, _summary

    text = "drift in input locations (joint test): pc0 (-1.3 sd, KS 0.41), amount (+2.1 sd); window 200 events"
    assert _shorten(text, 200) == text
    for width in range(20, len(text)):
        cut = _shorten(text, width)
        assert len(cut) <= width and cut.endswith("…")
        body = cut[:-1]
        assert text.startswith(body) and text[len(body)] in " ,;:(-", (width, cut)
    assert _shorten("x" * 50, 10) == "x" * 9 + "…"  # one long word: cut inside it
    alert = {"explanation": json.dumps({"summary": text})}
    assert _summary(alert, 60) == "drift in input locations (joint test): pc0 (-1.3 sd, KS…"


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    from importlib.metadata import version

    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"infersentry {version('infersentry')}\n", (r.stdout, r.stderr)


def test_simulate_help_lists_every_scenario(tmp_path: Path) -> None:
    import os

    from pipeline.traffic import SCENARIOS

    r = subprocess.run([sys.executable, "-m", "pipeline", "simulate", "--help"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    for name in SCENARIOS:
        assert name in r.stdout, name


def test_dead_letters_are_listed_and_exported_byte_exact(tmp_path: Path) -> None:
    good = [json.dumps(m) for m in generate("benign", n_events=300, seed=3).predictions]
    bad = [b'{"event_id": "n", "ts": 0, "model": "m", "features": [NaN], "prediction": 1}', b"\xff\xfe{",
           b'{"event_id": "p", "ts": 0, "model": "m", "features": [1]}']
    lines = [g.encode() for g in good[:10]] + bad[:2] + [g.encode() for g in good[10:]] + bad[2:]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    r = cli("replay", "p.jsonl", "--run", "dl", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    listed = cli("dead-letters", "list", "--run", "dl", "--limit", "2", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "the first 2 of 3 dead letters in dl" in " ".join(listed.stdout.split())
    assert "NaN" in listed.stdout and "missing required field prediction" not in listed.stdout
    exported = cli("dead-letters", "export", "--run", "dl", "--stream", "predictions", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    import base64

    assert [base64.b64decode(d["raw_base64"]) for d in rows] == bad  # exact bytes, in file order
    assert [d["position"] for d in rows] == [10, 11, len(lines) - 1]  # 0-based line index
    assert "NaN" in rows[0]["reason"] and rows[2]["reason"] == "missing required field prediction"
    assert rows[0]["raw"] == bad[0].decode() and rows[1]["raw"].startswith("\ufffd")
    none = cli("dead-letters", "export", "--run", "dl", "--stream", "labels", cwd=tmp_path)
    assert none.returncode == 0 and none.stdout == ""
    wrong = cli("dead-letters", "list", "--stream", "label", cwd=tmp_path)
    assert wrong.returncode == 2 and "labels" in wrong.stderr
