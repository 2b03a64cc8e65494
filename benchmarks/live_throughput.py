"""End-to-end live throughput over a real Kafka broker, and its scaling with consumer processes.

Starts a private broker (``pipeline.kafka_dev``, free ports, a temporary data directory, always
stopped), produces ``--events`` predictions of the ``mixed`` scenario (plus their delayed labels) to
``--partitions`` partitions, then for each K in ``--processes`` launches K ``infersentry run``
processes (``python -m pipeline run ... --until-idle 5``) in a fresh consumer group with a fresh
run name and waits for them all to exit. The live path measured: Kafka consume, decode, detectors,
idempotent database writes, checkpoints, offset commits.

Times, from the launch of the K processes:

* ``consumed``: the consumer group's committed offsets reach the end of both topics (the loop
  commits after each batch is written to the database) - the processing time, no idle wait;
* ``checkpointed``: the run's ``checkpoints`` rows sum to ``--events`` (polled every 0.2 s). With
  the default ``checkpoint_every_events`` (50,000 messages per process) the last snapshot is the
  one written at shutdown, so this includes the ``--until-idle`` wait.

Before the K runs, a bare kafka-python consumer (no group, no decoding) reads both topics once
in-process: the cost of the Kafka client alone.

CPU: the children's user + system time (``RUSAGE_CHILDREN`` deltas, idle wait included) and the
broker's (``psutil``). After each K the run's checkpoints must sum exactly to ``--events`` and the
children must exit 0; otherwise the benchmark fails. Lines with ``database is locked`` or
``retrying`` in the children's logs are counted and reported, and so is the sum of the events each
process scored (its ``stopped: N events`` line): above ``--events`` when partitions moved to a
process that joined later and were scored again from their last snapshot.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/live_throughput.py \\
        --events 100000 --partitions 4 --processes 1 2 [--db "$(bash scripts/pg-up.sh)"]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from sqlalchemy import func, select

from pipeline.kafka_dev import BrokerInfo, PortInUseError, free_port_pair, kafka_down, kafka_up
from pipeline.simulate import simulate
from pipeline.sources.kafka import KafkaClientSettings
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.storage.tables import checkpoints

IDLE_S = 5.0
POLL_S = 0.2


@dataclass
class Result:
    processes: int
    consumed_s: float
    checkpointed_s: float
    exited_s: float
    child_cpu_s: float
    broker_cpu_s: float
    db: str
    lock_lines: int
    scored: int


def start_broker(root: Path) -> tuple[BrokerInfo, Path]:
    for attempt in range(4):
        data_dir = root / f"kafka-{attempt}"
        port, controller_port = free_port_pair()
        try:
            return kafka_up(port=port, data_dir=data_dir, controller_port=controller_port, timeout=180), data_dir
        except PortInUseError:
            kafka_down(data_dir)
    raise RuntimeError("could not start the broker on a free port pair")


def checkpointed_events(store: Store, run: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(checkpoints.c.events), 0))
                                .where(checkpoints.c.run == run)).scalar_one())


def topic_ends(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def raw_consume(bootstrap: str, ends: dict[tuple[str, int], int], batch: int = 2000) -> tuple[float, float]:
    """Read every message of both topics with a bare kafka-python consumer (no group, no decoding): (wall, CPU)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=batch)
    try:
        tps = [TopicPartition(t, p) for t, p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        total, seen = sum(ends.values()), 0
        t0, c0 = time.perf_counter(), time.process_time()
        while seen < total:
            seen += sum(len(records) for records in consumer.poll(timeout_ms=1000).values())
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        consumer.close()


def committed(admin: object, group: str) -> dict[tuple[str, int], int]:
    from kafka.errors import KafkaError

    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})  # type: ignore[attr-defined]
    except KafkaError:  # the group's coordinator is not known yet
        return {}
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}


def broker_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_k(k: int, *, n: int, bootstrap: str, broker_pid: int | None, pred: str, lab: str,
          ends: dict[tuple[str, int], int], db_url: str, work: Path, timeout: float,
          trace: bool = False) -> Result:
    from kafka import KafkaAdminClient

    tag = uuid.uuid4().hex[:8]
    run, group = f"livebench-k{k}-{tag}", f"livebench-k{k}-{tag}"
    store = Store(make_engine(db_url))  # migrate before the clock starts
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "INFERSENTRY_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "pipeline", "run", "--bootstrap", bootstrap, "--topic", pred, "--labels-topic", lab,
           "--group", group, "--run", run, "--db", db_url, "--until-idle", str(IDLE_S)]
    logs = [work / f"{run}-{i}.log" for i in range(k)]
    cpu0, bcpu0 = children_cpu(), broker_cpu(broker_pid)
    t0 = time.perf_counter()
    procs: list[subprocess.Popen[str]] = []
    for log in logs:
        with open(log, "w") as sink:  # a file, not a pipe: a full pipe would block the child
            procs.append(subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env))
    consumed = checkpointed = exited = None
    try:
        while exited is None:
            now = time.perf_counter() - t0
            done = committed(admin, group)
            if consumed is None and all(done.get(tp, 0) >= end for tp, end in ends.items()):
                consumed = now
            saved = checkpointed_events(store, run)
            if checkpointed is None and saved >= n:
                checkpointed = now
            if trace:
                print(f"    t={now:6.2f}s committed {sum(done.values()):>7,} of {sum(ends.values()):,} offsets, "
                      f"checkpoints {saved:>7,} events")
            if all(p.poll() is not None for p in procs):
                exited = time.perf_counter() - t0
            elif now > timeout:
                raise SystemExit(f"K={k}: the consumers did not stop within {timeout:.0f}s (logs: {logs})")
            else:
                time.sleep(POLL_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        admin.close()
    cpu, bcpu = children_cpu() - cpu0, broker_cpu(broker_pid) - bcpu0
    output = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
    if any(p.returncode != 0 for p in procs):
        raise SystemExit(f"K={k}: exit codes {[p.returncode for p in procs]}\n{output}")
    total = checkpointed_events(store, run)
    if total != n:
        raise SystemExit(f"K={k}: the run's checkpoints sum to {total:,} events, not {n:,}\n{output}")
    if checkpointed is None:
        checkpointed = exited
    if consumed is None:
        raise SystemExit(f"K={k}: the group's committed offsets never reached the topics' ends\n{output}")
    locks = sum(1 for log in logs for line in log.read_text().splitlines()
                if "database is locked" in line or "retrying" in line)
    scored = 0
    for log in logs:
        last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
        print(f"  {log.name}: {last}")
        scored += int(last.split()[1].replace(",", "")) if last.startswith("stopped:") else 0
    store.engine.dispose()
    return Result(k, consumed, checkpointed, exited, cpu, bcpu, db_url.split(":", 1)[0].split("+")[0], locks, scored)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--db", default=None, help="SQLAlchemy URL shared by the K runs (each its own run name); "
                                               "default a fresh SQLite file per K")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--trace", action="store_true", help="Print committed offsets and checkpointed events per poll")
    ap.add_argument("--timeout", type=float, default=900.0, help="Seconds to wait for one K's processes to exit")
    args = ap.parse_args()
    if shutil.which("java") is None:
        raise SystemExit("java (17 or newer) is needed for the broker")
    n = args.events
    work = Path(tempfile.mkdtemp(prefix="infersentry-live-"))
    broker_dir: Path | None = None
    ok = False
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        info, broker_dir = start_broker(work)
        print(f"broker {info.version} at {info.bootstrap}, started in {info.startup_s or 0:.1f}s")
        pred, lab = f"livebench-p-{work.name}", f"livebench-l-{work.name}"
        t0 = time.perf_counter()
        n_pred, n_lab = simulate(KafkaClientSettings(bootstrap_servers=info.bootstrap), predictions_topic=pred,
                                 labels_topic=lab, n_events=n, scenario="mixed", seed=args.seed,
                                 partitions=args.partitions)
        produce_s = time.perf_counter() - t0
        print(f"produced {n_pred:,} predictions + {n_lab:,} labels to {args.partitions} partitions in "
              f"{produce_s:.1f}s ({n_pred / produce_s:,.0f} predictions/s)")
        ends = {tp: end for tp, end in topic_ends(info.bootstrap, [pred, lab]).items() if end > 0}
        assert sum(v for (t, _), v in ends.items() if t == pred) == n_pred == n
        print("predictions per partition: " + ", ".join(f"{p}: {v:,}" for (t, p), v in sorted(ends.items()) if t == pred))
        wall, cpu = raw_consume(info.bootstrap, ends)
        print(f"bare kafka-python consumer, both topics ({sum(ends.values()):,} messages), in-process: {wall:.1f}s wall, "
              f"{cpu:.1f}s CPU ({sum(ends.values()) / cpu:,.0f} messages per CPU-second)")
        results = []
        for k in args.processes:
            db_url = args.db or f"sqlite:///{work}/live-k{k}.db"
            print(f"K={k}: {k} x infersentry run ...")
            results.append(run_k(k, n=n, bootstrap=info.bootstrap, broker_pid=info.pid, pred=pred, lab=lab,
                                 ends=ends, db_url=db_url, work=work, timeout=args.timeout,
                                 trace=args.trace))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print()
        print("| processes | partitions | events | wall s (consumed) | events/s wall | wall s (checkpointed, incl. idle) "
              "| children CPU s | events/s per CPU-second | broker CPU s | DB | lock retries logged | events scored (all processes) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r.processes} | {args.partitions} | {n:,} | {r.consumed_s:.1f} | {n / r.consumed_s:,.0f} "
                  f"| {r.checkpointed_s:.1f} | {r.child_cpu_s:.1f} | {n / r.child_cpu_s:,.0f} | {r.broker_cpu_s:.1f} "
                  f"| {r.db} | {r.lock_lines} | {r.scored:,} |")
        ok = True
    finally:
        if broker_dir is not None:
            kafka_down(broker_dir)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} (children's logs, SQLite files)", file=sys.stderr)


if __name__ == "__main__":
    main()
