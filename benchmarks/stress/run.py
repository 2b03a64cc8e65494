"""Run the stress benchmark: generate each scenario, replay it through the real CLI, score the alerts.

    .venv/bin/python -m benchmarks.stress.run [--out DIR] [--only SUBSTRING ...] [--jobs 1] [--json FILE]

The code under test is a snapshot of a git revision (``--code``, default ``HEAD``: ``git archive`` into
``DIR/code-SHA``, put first on ``PYTHONPATH``), so that edits in progress in the working tree do not leak
into the measurement; ``--code worktree`` tests the working tree as it is.

Each scenario is written to ``DIR/NAME/{events,labels}.jsonl`` (+ ``truth.json``), replayed with
``infersentry replay ... --db sqlite:///DIR/NAME/replay.db --run NAME``, exported with
``infersentry alerts export``, and scored against the generator's ground truth.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.stress.scenarios import Scenario, all_scenarios

ROOT = Path(__file__).resolve().parents[2]
#: The CLI of this checkout's venv, else the running interpreter's (a git worktree has no .venv of its own).
CLI = str(ROOT / ".venv" / "bin" / "infersentry") if (ROOT / ".venv" / "bin" / "infersentry").exists() \
    else f"{sys.executable} -m pipeline"
STREAM_KINDS = ("drift", "performance")
CALLER_KINDS = ("attack_campaign", "extraction")
EVENT_KINDS = ("outlier", "adversarial")


def snapshot(out: Path, rev: str) -> tuple[str, dict[str, str]]:
    """Export ``rev`` of the repository under ``out``; its commit and the environment that runs it."""
    import os

    env = dict(os.environ)
    if rev == "worktree":  # this checkout's files, even where an editable install points elsewhere
        env["PYTHONPATH"] = str(ROOT)
        return "worktree", env
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = out / f"code-{sha[:12]}"
    if not dest.exists():
        tmp = out / f".code-{sha[:12]}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(dest)
    env["PYTHONPATH"] = str(dest)
    return sha, env


def replay_command(out: Path, name: str) -> str:
    """The shell command that replays one generated scenario."""
    d = out / name
    return (f"{CLI} replay {d}/events.jsonl --labels {d}/labels.jsonl --db sqlite:///{d}/replay.db "
            f"--run {name} --quiet")


def _summary(a: dict[str, Any]) -> str:
    return str(a.get("explanation", {}).get("summary", ""))[:300]


def score(sc: Scenario, truth: dict[str, Any], alerts: list[dict[str, Any]], dead: int) -> dict[str, Any]:
    """Compare alerts with the ground truth of one scenario."""
    events = truth["events"]
    pos = {e[0]: i for i, e in enumerate(events)}
    attacker_ids = {eid for a in truth["attackers"].values() for eid in a["event_ids"]}
    attackers = set(truth["attackers"])
    n_benign = sum(1 for e in events if e[0] not in attacker_ids)
    kinds = Counter(a["kind"] for a in alerts)
    res: dict[str, Any] = {
        "name": sc.name, "group": sc.group, "lines": truth["lines"], "events": len(events),
        "malformed": truth["malformed"], "dead_letters": dead, "alerts": dict(kinds),
    }
    stream = [a for a in alerts if a["kind"] in STREAM_KINDS]
    ev_flags = [a for a in alerts if a["kind"] in EVENT_KINDS]
    benign_flags = [a for a in ev_flags if a["trigger_event_id"] not in attacker_ids]
    res["event_flags_benign"] = len(benign_flags)
    res["event_flag_rate"] = len(benign_flags) / max(n_benign, 1)
    res["data_quality"] = [f"{a['detector']}: {_summary(a)}" for a in alerts if a["kind"] == "data_quality"]
    caller = [a for a in alerts if a["kind"] in CALLER_KINDS]
    res["benign_callers_flagged"] = sorted({f"{a['kind']}:{a['client_id']}" for a in caller
                                            if a["client_id"] not in attackers})
    drift = truth.get("drift")
    if drift is None:
        # In attack scenarios, a stream alarm while an attacker is active (or within 1 h after) is the
        # attacker's own traffic moving the input distribution: reported, not counted as a false alarm.
        windows = [(a["first_ts"], a["last_ts"] + 3600.0) for a in truth["attackers"].values()]
        during = [a for a in stream if any(lo <= _ts(a) <= hi for lo, hi in windows)]
        res["attack_induced_stream_alarms"] = [f"{a['kind']} at {a['raised_at']}: {_summary(a)}" for a in during]
        res["stream_alarms"] = [f"{a['kind']} {a['model']}/{a['model_version']} at {a['raised_at']}: {_summary(a)}"
                                for a in stream if a not in during]
    else:
        change = drift["change_ts"]
        pre = [a for a in stream if _ts(a) < change]
        post = [a for a in stream if _ts(a) >= change and a["model"] == drift["model"]]
        res["stream_alarms"] = [f"{a['kind']} {a['model']}/{a['model_version']} at {a['raised_at']} (before change): "
                                f"{_summary(a)}" for a in pre]
        route = [e for e in events if e[1] == drift["model"] and e[5] >= change]
        res["post_change_events"] = len(route)
        if post:
            first = min(post, key=lambda a: (_ts(a), a["alert_id"]))
            t = pos.get(first["trigger_event_id"])
            res["detected"] = True
            res["delay_events"] = sum(1 for e in route if t is not None and pos[e[0]] <= t)
            res["first_alert"] = f"{first['kind']} {first['detector']}: {_summary(first)}"
        else:
            res["detected"] = False
    per: dict[str, Any] = {}
    for who, info in truth["attackers"].items():
        ids = info["event_ids"]
        mine = set(ids)
        hits = [a for a in caller if a["client_id"] == who]
        flags = [a for a in ev_flags if a["trigger_event_id"] in mine]
        row: dict[str, Any] = {"kind": info["kind"], "queries": len(ids), "event_flags": len(flags)}
        row["queries_before_alert"] = None
        for kind in CALLER_KINDS:
            mine_k = [a for a in hits if a["kind"] == kind]
            if not mine_k:
                continue
            first = min(mine_k, key=lambda a: pos.get(a["trigger_event_id"], 1 << 60))
            t = pos.get(first["trigger_event_id"], 1 << 60)
            n = sum(1 for e in ids if pos[e] <= t)
            row[f"{kind}_after"] = n
            row[f"{kind}_alert"] = _summary(first)
            if row["queries_before_alert"] is None or n < row["queries_before_alert"]:
                row["queries_before_alert"] = n
        if flags:
            row["first_flagged_query"] = min(ids.index(a["trigger_event_id"]) for a in flags) + 1
        per[who] = row
    res["attackers"] = per
    res["verdict"] = _verdict(sc, res)
    return res


def _ts(a: dict[str, Any]) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(a["raised_at"].replace("Z", "+00:00")).timestamp()


def _verdict(sc: Scenario, r: dict[str, Any]) -> list[str]:
    """Problems found in one scenario (empty = as expected)."""
    bad = []
    if r["dead_letters"] != r["malformed"]:
        bad.append(f"dead letters {r['dead_letters']} != malformed {r['malformed']}")
    if r["stream_alarms"]:
        bad.append(f"{len(r['stream_alarms'])} stream-level false alarm(s)")
    if r["benign_callers_flagged"]:
        bad.append(f"benign callers flagged: {', '.join(r['benign_callers_flagged'])}")
    if r["event_flag_rate"] > 0.001:
        bad.append(f"per-event flag rate {r['event_flag_rate']:.3%} > 0.1%")
    if any("label" in d for d in r["data_quality"]):
        bad.append("labels not joined")
    if sc.group == "drift" and not r.get("detected"):
        bad.append("drift missed")
    for who, a in r["attackers"].items():
        if a["queries_before_alert"] is None:
            bad.append(f"{a['kind']} ({who}) missed")
    return bad


def run_one(sc: Scenario, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """Generate, replay, export and score one scenario."""
    d = out / sc.name
    t0 = time.time()
    stream = sc.build()
    stream.write(d)
    t1 = time.time()
    db = d / "replay.db"
    db.unlink(missing_ok=True)
    proc = subprocess.run(replay_command(out, sc.name).split(), capture_output=True, text=True, cwd=d,
                          env=env)
    t2 = time.time()
    if proc.returncode != 0:
        return {"name": sc.name, "group": sc.group, "crash": proc.stderr[-2000:], "verdict": ["replay crashed"]}
    exp = subprocess.run([*CLI.split(), "alerts", "export", "--run", sc.name, "--db", f"sqlite:///{db}",
                          "--out", str(d / "alerts.jsonl")], capture_output=True, text=True, env=env)
    if exp.returncode != 0:
        return {"name": sc.name, "group": sc.group, "crash": exp.stderr[-2000:], "verdict": ["export crashed"]}
    alerts = [json.loads(line) for line in (d / "alerts.jsonl").read_text().splitlines() if line]
    with sqlite3.connect(db) as con:
        dead = int(con.execute("select count(*) from dead_letters").fetchone()[0])
    res = score(sc, stream.truth, alerts, dead)
    res.update({"gen_s": round(t1 - t0, 1), "replay_s": round(t2 - t1, 1), "reproduce": replay_command(out, sc.name)})
    return res


def _row(r: dict[str, Any]) -> str:
    if "crash" in r:
        return f"| {r['name']} | CRASH | | | | |"
    att = "; ".join(f"{w} {a['kind']} ({a['queries']} q): campaign {a.get('attack_campaign_after', '-')}, "
                    f"extraction {a.get('extraction_after', '-')}, first event flag "
                    f"{a.get('first_flagged_query', '-')}, {a['event_flags']} flagged"
                    for w, a in r["attackers"].items())
    if r.get("attack_induced_stream_alarms"):
        att += f"; {len(r['attack_induced_stream_alarms'])} drift alarm(s) during the attack"
    det = ""
    if "detected" in r:
        det = f"after {r['delay_events']} ev" if r["detected"] else "MISSED"
    return (f"| {r['name']} | {r['events']} | {len(r['stream_alarms'])} | {det} | "
            f"{r['event_flags_benign']} ({r['event_flag_rate']:.3%}) | {len(r['benign_callers_flagged'])} | "
            f"{att} | {'; '.join(r['verdict']) or 'ok'} |")


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown results table."""
    head = ("| scenario | events | stream false alarms | drift detected | benign event flags | benign callers "
            "flagged | attackers: queries before alert | verdict |\n|---|---|---|---|---|---|---|---|")
    return "\n".join([head] + [_row(r) for r in results])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/infersentry-stress"))
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("results.json"))
    ap.add_argument("--code", default="HEAD", help="git revision to test, or 'worktree'")
    ap.add_argument("--write-only", action="store_true", help="generate the files, do not replay")
    args = ap.parse_args(argv)
    scs = [s for s in all_scenarios() if not args.only or any(o in s.name for o in args.only)]
    if args.write_only:
        for s in scs:
            s.build().write(args.out / s.name)
            print(replay_command(args.out, s.name))
        return 0
    t0 = time.time()
    sha, env = snapshot(args.out, args.code)
    print(f"code under test: {sha}", file=sys.stderr)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run_one, scs, [args.out] * len(scs), [env] * len(scs)))
    for r in results:
        print(f"{r['name']}: {'; '.join(r['verdict']) or 'ok'}", file=sys.stderr)
    print(table(results))
    print(f"\ncode {sha}; total wall time {time.time() - t0:.0f} s")
    wall = round(time.time() - t0)
    target = args.json
    if args.only and args.json.exists():  # a partial rerun updates those scenarios in the saved results
        saved = json.loads(args.json.read_text())
        if saved.get("code") == sha:
            fresh = {r["name"]: r for r in results}
            order = [r["name"] for r in saved["results"]] + [n for n in fresh if n not in
                                                              {r["name"] for r in saved["results"]}]
            old = {r["name"]: r for r in saved["results"]}
            results = [fresh.get(n, old.get(n)) for n in order]  # type: ignore[misc]
            wall = saved.get("wall_s", 0)
        else:  # never replace a full run's results with a partial run of other code
            target = args.out / "results.json"
            print(f"partial run of other code than {args.json}: results in {target}", file=sys.stderr)
    target.write_text(json.dumps({"code": sha, "wall_s": wall, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
