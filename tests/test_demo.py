"""The demo finds what it injected, and nothing on its benign callers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.demo import run_demo
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store


def test_demo_finds_the_drift_and_the_attackers_only(tmp_path: Path) -> None:
    report = run_demo(Store(make_engine(f"sqlite:///{tmp_path}/demo.db")), tmp_path / "demo")
    truth = report.truth
    change = truth.change_points[0]
    assert report.drift_alerts, "no drift alert"
    first_drift = min(a["raised_ts"] for a in report.drift_alerts)
    assert first_drift >= change.ts, "drift alert before the change point"
    assert truth.attacker_ids and report.caught_attackers == set(truth.attacker_ids)
    assert report.flagged_benign_callers == set()
    for a in report.caller_alerts:
        attacker = truth.attacker(a["client_id"])
        assert a["raised_ts"] >= attacker.first_ts


def test_demo_prints_where_to_look_next_as_commands_that_run(tmp_path: Path) -> None:
    """After ``scripts/demo.sh`` the CLI is ``.venv/bin/infersentry``, not on PATH: the demo prints commands
    that run as printed (here with a PATH that has no ``infersentry``), and mentions its performance alert."""
    import os
    import shlex
    import subprocess
    import sys

    db = f"sqlite:///{tmp_path}/demo.db"
    env = {**os.environ, "PATH": os.defpath}
    r = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--workdir", str(tmp_path / "demo"), "--db", db],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "performance (error rate on the delayed labels): 1 alert" in out and "performance alert at" in out
    found = next(line for line in out.splitlines() if line.startswith("  found: drift alert"))
    caught = [line for line in out.splitlines() if "caught (" in line]
    assert caught and not any("goes on" in line for line in caught)  # why it was caught, not its latest update
    assert found.endswith("…")  # the drift summary is long: cut at a word, with an ellipsis
    commands = out.split("where to look next\n", 1)[1].splitlines()
    assert not any(c.strip().startswith("infersentry ") for c in commands)  # not on this PATH
    for sub in ("runs report", "alerts list", "alerts review", "alerts export"):
        line = next(c for c in commands if f" {sub} " in c)
        argv = shlex.split(line.split("   #")[0])
        assert f"--db {db}" in line
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, (line, done.stderr)


def test_cli_command_is_the_entry_point_next_to_the_interpreter_when_not_on_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import pipeline.cli
    from pipeline.cli import _cli_command

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "infersentry").write_text("#!/bin/sh\n")
    other = tmp_path / "other-infersentry"
    other.write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    on_path: list[str | None] = [None]
    monkeypatch.setattr(pipeline.cli.shutil, "which", lambda name: on_path[0])
    assert _cli_command() == ".venv/bin/infersentry"
    on_path[0] = str(other)  # another installation's infersentry is on PATH: not ours
    assert _cli_command() == ".venv/bin/infersentry"
    on_path[0] = str(bin_dir / "infersentry")  # the venv is activated
    assert _cli_command() == "infersentry"
    monkeypatch.chdir(bin_dir)
    on_path[0] = None
    assert _cli_command() == "./infersentry"
    (bin_dir / "infersentry").unlink()
    assert _cli_command() == "./python -m pipeline"
