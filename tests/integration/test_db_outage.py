"""Fault injection: PostgreSQL goes down in the middle of a live Kafka run.

Each test starts a *private* PostgreSQL server (Debian's ``initdb``/``pg_ctl``, in a temporary
data directory, on a free port) so that it can stop and restart it without touching the shared
cluster the rest of the suite uses. Every interrupted run is compared with an uninterrupted run
of the same messages on the same server (another database): alerts, flagged events, dead
letters and checkpointed event counts must be equal, nothing lost and nothing twice.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from pipeline.config import MonitorConfig, load_config
from pipeline.live import StopFlag, run_live
from pipeline.runner import RunTotals
from pipeline.simulate import simulate
from pipeline.sources.kafka import KafkaClientSettings, KafkaSink, ensure_topics
from pipeline.storage.db import make_engine
from pipeline.storage.store import Store
from pipeline.storage.tables import alerts, checkpoints, dead_letters, flagged_events, runs, window_stats

pytestmark = pytest.mark.kafka

ROLE = "infersentry"


class PrivatePostgres:
    """A throw-away PostgreSQL server that a test may stop and start at will.

    The server runs as the ``postgres`` OS user when the tests run as root (``runuser``), as the
    current user otherwise; it listens on 127.0.0.1 only, with ``trust`` authentication.
    """

    def __init__(self, bindir: Path, root: Path, pick_port: Callable[[], int]) -> None:
        self.bindir = bindir
        self.pick_port = pick_port
        self.root = root
        self.data = root / "data"
        self.logfile = root / "server.log"
        self.port = 0

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + list(args)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), *args),
                              capture_output=True, text=True, check=check, timeout=60)

    def init(self) -> None:
        subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                                 "-E", "UTF8", "--locale=C", "--no-sync"),
                       capture_output=True, text=True, check=True, timeout=120)

    def start(self) -> None:
        """Start the server (on the port chosen by the first start) and wait until it accepts connections."""
        if not self.port:
            self.port = self.pick_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                "-c fsync=off -c max_connections=50")
        done = self._pg_ctl("start", "-w", "-t", "30", "-l", str(self.logfile), "-o", opts, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (clients get 'terminating connection') or ``immediate`` (a crash)."""
        self._pg_ctl("stop", "-w", "-t", "30", "-m", mode)

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process is gone
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Every server process stopped (SIGSTOP) inside the block: connections stay open, nothing answers."""
        pids = self.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text()[-2000:]
        except OSError:
            return ""

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        admin = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
                              isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ROLE}).first():
                conn.execute(text(f"CREATE ROLE {ROLE} LOGIN"))
            conn.execute(text(f'CREATE DATABASE "{name}" OWNER {ROLE}'))
        admin.dispose()
        return self.url(name)


def _postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: [int(x) if x.isdigit() else x for x in Path(p).parts[-3].split(".")])
    if not found:
        pytest.fail("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/pg_ctl): "
                    "run scripts/pg-up.sh, which installs Debian's postgresql package")
    return Path(found[-1]).parent


@pytest.fixture
def private_pg(pick_port_pair: Callable[[], tuple[int, int]]) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server, always stopped (``-m immediate``) and removed at teardown."""
    bindir = _postgres_bindir()
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("runuser not found: needed to run PostgreSQL as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="infersentry-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(bindir, root, lambda: pick_port_pair()[0])
    try:
        server.init()
        for attempt in range(4):  # lost a race for the port: another one
            try:
                server.start()
                break
            except RuntimeError:
                server.port = 0
                if attempt == 3:
                    raise
        yield server
    finally:
        if server.running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# -- helpers --------------------------------------------------------------------------------
def settings(bootstrap: str) -> KafkaClientSettings:
    return KafkaClientSettings(bootstrap_servers=bootstrap)


#: Small batches and frequent checkpoints, so that an outage falls between checkpoints; a short
#: outlier reference, so that a few thousand events per partition raise alerts to compare.
CONFIG_YAML = """\
batch_size: 150
checkpoint_every_events: 450
defaults:
  detectors:
    outlier: {params: {reference_events: 300}}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_YAML)
    return path


N_EVENTS = 8000


def produce(bootstrap: str, pred: str, lab: str, *, seed: int) -> int:
    """Two poison messages, then simulated predictions (drift and attacks) with their labels;
    returns the number of valid predictions.

    These streams raise outlier, campaign and drift alerts and drift window stats, all of which a
    live run reproduces exactly whatever its batch cuts (checked with batches of 37, 150 and 500).
    They raise no performance findings: those depend on the order in which labels happen to be
    polled (docs/pipeline.md), so a stream that raised them could differ for that reason alone.
    """
    ensure_topics(bootstrap, {pred: 2, lab: 2})
    with KafkaSink(settings(bootstrap)) as sink:
        sink.send(pred, b"\xff\xfe not json", b"poison-a")
        sink.send(pred, b'{"event_id": "x", "ts": Infinity}', b"poison-b")
    n_pred, _ = simulate(settings(bootstrap), predictions_topic=pred, labels_topic=lab, n_events=N_EVENTS,
                         seed=seed, partitions=2)
    return n_pred


def snapshot_of_results(url: str, run: str = "live") -> dict[str, Any]:
    """Everything a run produced that must not depend on an outage (no wall-clock columns)."""
    engine = create_engine(url, poolclass=NullPool)
    a = alerts.c
    with engine.connect() as conn:
        alert_rows = [tuple(r) for r in conn.execute(
            select(a.alert_id, a.kind, a.detector, a.severity, a.raised_at, a.window_end, a.client_id, a.model,
                   a.model_version, a.partition, a.trigger_event_id, a.event_ids, a.score).where(a.run == run))]
        flagged = [tuple(r) for r in conn.execute(
            select(flagged_events.c.event_id, flagged_events.c.detector, flagged_events.c.score)
            .where(flagged_events.c.run == run))]
        dead = [tuple(r) for r in conn.execute(
            select(dead_letters.c.source, dead_letters.c.partition, dead_letters.c.position, dead_letters.c.reason)
            .where(dead_letters.c.run == run))]
        w = window_stats.c
        stats = [tuple(r) for r in conn.execute(
            select(w.model, w.model_version, w.partition, w.detector, w.stat, w.window, w.window_start, w.window_end,
                   w.n, w.location, w.spread, w.score, w.threshold).where(w.run == run))]
        cps = {r.scope: (r.events, orjson.loads(r.positions))
               for r in conn.execute(select(checkpoints).where(checkpoints.c.run == run))}
        run_row = conn.execute(select(runs.c.events, runs.c.dead_letters, runs.c.first_event_ts, runs.c.last_event_ts)
                               .where(runs.c.run == run)).one()
    engine.dispose()
    return {"alerts": alert_rows, "flagged": flagged, "dead": dead, "stats": stats, "checkpoints": cps, "run": tuple(run_row)}


def assert_same_results(got: dict[str, Any], want: dict[str, Any], n_events: int) -> None:
    for key in ("alerts", "flagged", "dead", "stats"):  # no duplicates (keys are unique) and equal as sets
        assert len(got[key]) == len(set(got[key])), f"duplicate {key}"
    assert sum(e for e, _ in want["checkpoints"].values()) == n_events
    assert sum(e for e, _ in got["checkpoints"].values()) == n_events, "events lost or counted twice"
    assert got["checkpoints"] == want["checkpoints"]
    assert got["run"] == want["run"]
    assert want["alerts"] and want["flagged"] and want["dead"] and want["stats"], "nothing to compare"
    assert sorted(got["stats"]) == sorted(want["stats"])
    assert sorted(got["dead"]) == sorted(want["dead"])
    assert sorted(got["flagged"]) == sorted(want["flagged"])
    assert sorted(got["alerts"]) == sorted(want["alerts"])


def uninterrupted(server: PrivatePostgres, config: MonitorConfig, bootstrap: str, pred: str, lab: str,
                  group: str) -> dict[str, Any]:
    """The same messages, read from the start by another group, into another database; no outage."""
    url = server.create_database("baseline")
    run_live(Store(make_engine(url)), config, settings(bootstrap), run="live", group=group,
             predictions_topic=pred, labels_topic=lab, until_idle=3.0)
    return snapshot_of_results(url)


def progress(url: str) -> tuple[int, int]:
    """(events covered by checkpoints, flagged events and window stats written) in one snapshot."""
    engine = create_engine(url, poolclass=NullPool)
    covered = select(func.coalesce(func.sum(checkpoints.c.events), 0)).scalar_subquery()
    written = (select(func.count()).select_from(window_stats).scalar_subquery()
               + select(func.count()).select_from(flagged_events).scalar_subquery())
    try:
        with engine.connect() as conn:
            row = conn.execute(select(covered, written)).one()
            return int(row[0]), int(row[1])
    except ProgrammingError:  # the run has not created the schema yet
        return 0, 0
    finally:
        engine.dispose()


def wait_until(url: str, alive: Callable[[], bool], at_least: int, past_checkpoint: bool = False,
               timeout: float = 60.0) -> int:
    """Wait until the checkpoints cover ``at_least`` events and, with ``past_checkpoint``, until
    rows were written after the newest checkpoint; returns the events the checkpoints cover."""
    deadline = time.monotonic() + timeout
    seen = (0, 0)
    while time.monotonic() < deadline:
        now = progress(url)
        if now[0] >= at_least and (not past_checkpoint or (now[0] == seen[0] and now[1] > seen[1])):
            return now[0]
        if now[0] != seen[0]:
            seen = now
        assert alive(), "the run ended before the outage"
        time.sleep(0.05)
    raise AssertionError(f"the run did not get that far in time (checkpointed events, rows: {seen})")


# -- scenarios ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_short_outage_is_retried_and_the_run_finishes_with_nothing_lost(
        private_pg: PrivatePostgres, kafka_broker: str, unique_name: str, tmp_path: Path, config_file: Path,
        mode: str) -> None:
    """The CLI's live run (default retry budget, 120 s) rides out a 6 s PostgreSQL outage: a clean
    shutdown (``fast``: sessions are terminated) or a crash (``immediate``: recovery on restart)."""
    pred, lab = f"p-{unique_name}", f"l-{unique_name}"
    n_events = produce(kafka_broker, pred, lab, seed=41)
    url = private_pg.create_database("outage")
    log = tmp_path / "run.log"
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--bootstrap", kafka_broker, "--topic", pred,
             "--labels-topic", lab, "--group", f"g-{unique_name}", "--db", url, "--config", str(config_file),
             "--until-idle", "8"],
            stdout=sink, stderr=subprocess.STDOUT, text=True, env={**os.environ, "INFERSENTRY_LOG_LEVEL": "WARNING"})
    try:
        wait_until(url, lambda: proc.poll() is None, at_least=1)
        private_pg.stop(mode)
        time.sleep(6)
        assert proc.poll() is None, log.read_text()[-3000:]
        private_pg.start()
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    assert "database unavailable" in output, "the outage was never noticed: the test proved nothing"
    assert f"stopped: {n_events:,} events" in output, output[-3000:]
    got = snapshot_of_results(url)
    want = uninterrupted(private_pg, load_config(config_file), kafka_broker, pred, lab, f"b-{unique_name}")
    assert_same_results(got, want, n_events)


def test_outage_longer_than_the_retry_budget_fails_then_a_restart_resumes(
        private_pg: PrivatePostgres, kafka_broker: str, unique_name: str, config_file: Path) -> None:
    """With a 2 s retry budget a crash-like outage (``-m immediate``) fails the run with a database
    error; once PostgreSQL is back, the same run and group resume from the last checkpoint."""
    pred, lab = f"p-{unique_name}", f"l-{unique_name}"
    group = f"g-{unique_name}"
    n_events = produce(kafka_broker, pred, lab, seed=51)
    url = private_pg.create_database("outage")
    config = load_config(config_file)
    failure: list[BaseException] = []
    totals: list[RunTotals] = []

    def first_run() -> None:
        try:
            totals.append(run_live(Store(make_engine(url), retry_seconds=2), config, settings(kafka_broker),
                                   run="live", group=group, predictions_topic=pred, labels_topic=lab,
                                   until_idle=8.0, stop=StopFlag()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        before = wait_until(url, thread.is_alive, at_least=N_EVENTS // 4, past_checkpoint=True)
        private_pg.stop("immediate")
        thread.join(timeout=30)
        assert not thread.is_alive(), "the run kept waiting past its retry budget"
    finally:
        if not private_pg.running():
            private_pg.start()
        thread.join(timeout=60)
    assert not totals and len(failure) == 1, f"the run did not fail: {totals}"
    exc = failure[0]
    assert isinstance(exc, OperationalError), repr(exc)
    assert f"port {private_pg.port}" in str(exc), str(exc)  # the error names the database server
    assert 0 < before < n_events
    # what the failed run made durable: at least what the test saw before the stop, maybe one more
    # checkpoint that landed while the server was going down
    durable = progress(url)[0]
    assert before <= durable < n_events

    resumed = run_live(Store(make_engine(url), retry_seconds=2), config, settings(kafka_broker), run="live",
                       group=group, predictions_topic=pred, labels_topic=lab, until_idle=3.0)
    got = snapshot_of_results(url)
    # the restart resumed from the last checkpoint (not from zero), re-processing batches already written
    assert resumed.events == n_events - durable
    want = uninterrupted(private_pg, load_config(config_file), kafka_broker, pred, lab, f"b-{unique_name}")
    assert_same_results(got, want, n_events)


def test_a_server_that_stops_answering_fails_within_the_retry_budget(private_pg: PrivatePostgres) -> None:
    """An unresponsive server (every process SIGSTOPped) must not hang the run past its retry budget."""
    store = Store(make_engine(private_pg.create_database("frozen")), retry_seconds=2)
    store.start_run("live", "live", "test", None, "h", "{}", "test")
    outcome: list[BaseException | None] = []

    def finish() -> None:
        try:
            store.finish_run("live", "stopped")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    with private_pg.frozen():
        worker = threading.Thread(target=finish, daemon=True)
        worker.start()
        worker.join(timeout=10)
        hung = worker.is_alive()
    worker.join(timeout=10)  # thawed: the blocked call completes
    assert not hung, "the write was still blocked 10 s into a 2 s retry budget"
    assert outcome and isinstance(outcome[0], OperationalError)
