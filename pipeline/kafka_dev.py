"""Local development broker: Apache Kafka 4.x (KRaft, one node) from Maven Central jars, no Docker.

``kafka_up`` resolves the broker's jars with ``mvn`` into a cache directory (once), writes a one-node
KRaft configuration into a data directory, formats the storage with a fresh cluster id, starts
``kafka.Kafka`` detached in its own process group and returns once the broker answers an admin
request. ``kafka_down`` stops only the process it recorded; ``kafka_status`` reports on it.

Environment: ``INFERSENTRY_KAFKA_CACHE`` replaces the cache root ``~/.cache/infersentry`` (jars go to
``<root>/kafka-<version>/libs``, default data directories to ``<root>/kafka-data-<port>``);
``INFERSENTRY_KAFKA_VERSION`` pins the Kafka version; ``INFERSENTRY_JAVA`` / ``JAVA_HOME`` pick Java.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "KAFKA_VERSIONS",
    "BrokerInfo",
    "KafkaDevError",
    "PortInUseError",
    "default_data_dir",
    "ensure_topics",
    "kafka_down",
    "kafka_status",
    "kafka_up",
    "new_cluster_id",
    "resolve_jars",
]

#: Versions tried in order (newest first) unless ``INFERSENTRY_KAFKA_VERSION`` pins one.
KAFKA_VERSIONS: tuple[str, ...] = ("4.4.0", "4.3.1", "4.3.0", "4.2.0", "4.1.1", "4.1.0", "4.0.1", "4.0.0")
SLF4J_1_7 = "1.7.36"
HEAP = "-Xmx512m"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
_STATE_FILE = "broker.json"
_PID_FILE = "kafka.pid"
_LOG_FILE = "kafka.log"
_READY_MARKER = "classpath.txt"
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class KafkaDevError(RuntimeError):
    """The development broker could not be resolved, started, or stopped."""


class PortInUseError(KafkaDevError):
    """A listener port was taken (possibly by another process between our check and the bind)."""


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Where a development broker lives and whether it runs.

    ``already_running`` is true when :func:`kafka_up` found the broker up and did nothing;
    ``startup_s`` is the time ``kafka_up`` spent (resolve + format + start + readiness).
    """

    running: bool
    bootstrap: str
    port: int
    controller_port: int | None
    data_dir: Path
    pid: int | None
    version: str | None
    log_file: Path
    already_running: bool = False
    startup_s: float | None = None

    def describe(self) -> str:
        """One human-readable line."""
        if not self.running:
            return f"kafka dev broker stopped (data dir {self.data_dir})"
        how = "already running" if self.already_running else "running"
        return (f"kafka {self.version} {how} at {self.bootstrap} (pid {self.pid}, "
                f"data dir {self.data_dir}, log {self.log_file})")


# --------------------------------------------------------------------------------------------
# paths


def cache_root() -> Path:
    """The cache root: ``$INFERSENTRY_KAFKA_CACHE`` or ``~/.cache/infersentry``."""
    env = os.environ.get("INFERSENTRY_KAFKA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "infersentry"


def default_data_dir(port: int = 9092) -> Path:
    """Default data directory of the broker listening on ``port``."""
    return cache_root() / f"kafka-data-{port}"


def _data_path(data_dir: str | os.PathLike[str] | None, port: int) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir(port)


# --------------------------------------------------------------------------------------------
# jars


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaDevError("`mvn` (Apache Maven) is not on PATH; it is needed once to fetch Kafka's jars")
    return mvn


def _java() -> str:
    explicit = os.environ.get("INFERSENTRY_JAVA")
    if explicit:
        return explicit
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaDevError("`java` (17 or newer) is not on PATH and JAVA_HOME is unset")
    return java


_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>infersentry.dev</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def _dep(group: str, artifact: str, version: str) -> str:
    return (f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>")


def _run_mvn(pom_dir: Path, out_dir: Path) -> None:
    cmd = [_mvn(), "-B", "-q", "-f", str(pom_dir / "pom.xml"), f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
           f"-DoutputDirectory={out_dir}", "-DincludeScope=runtime", "-DoverWriteIfNewer=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise KafkaDevError(f"mvn could not resolve the dependencies in {pom_dir / 'pom.xml'}:\n{tail}")


def _jar_version(libs: Path, artifact: str) -> str | None:
    pattern = re.compile(re.escape(artifact) + r"-(\d[\w.\-]*)\.jar$")
    for jar in libs.glob(f"{artifact}-*.jar"):
        m = pattern.match(jar.name)
        if m:
            return m.group(1)
    return None


def _resolve_version(version: str, dest: Path) -> list[Path]:
    """Copy kafka_2.13:<version> with its runtime dependencies and the log4j/slf4j binding into dest."""
    work = Path(tempfile.mkdtemp(prefix=".resolve-", dir=dest.parent))
    try:
        libs = work / "libs"
        (work / "pom.xml").write_text(_POM.format(deps=_dep("org.apache.kafka", "kafka_2.13", version)))
        _run_mvn(work, libs)
        log4j = _jar_version(libs, "log4j-core")
        if log4j is None:
            raise KafkaDevError(f"kafka_2.13:{version} did not bring log4j-core; cannot pick a binding")
        # The release tarball ships the slf4j 1.7 -> log4j2 binding; the POM does not declare it.
        # Pin slf4j-api 1.7.x next to it, replacing whatever the tree brought.
        for old in libs.glob("slf4j-api-*.jar"):
            old.unlink()
        binding = work / "binding"
        binding.mkdir()
        (binding / "pom.xml").write_text(_POM.format(deps="\n".join([
            _dep("org.apache.logging.log4j", "log4j-slf4j-impl", log4j),
            _dep("org.slf4j", "slf4j-api", SLF4J_1_7),
        ])))
        _run_mvn(binding, libs)
        for stray in libs.glob("log4j-*.jar"):
            m = re.match(r"log4j-[a-z0-9\-]+?-(\d[\w.\-]*)\.jar$", stray.name)
            if m and m.group(1) != log4j:
                raise KafkaDevError(f"log4j jars disagree: {stray.name} vs log4j-core {log4j}")
        jars = sorted(libs.glob("*.jar"))
        (libs / _READY_MARKER).write_text("\n".join(j.name for j in jars) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        libs.rename(dest)
        return sorted(dest.glob("*.jar"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(version: str) -> list[Path] | None:
    libs = cache_root() / f"kafka-{version}" / "libs"
    if (libs / _READY_MARKER).exists():
        names = (libs / _READY_MARKER).read_text().split()
        jars = [libs / n for n in names]
        if jars and all(j.exists() for j in jars):
            return jars
    return None


def resolve_jars(version: str | None = None) -> tuple[str, list[Path]]:
    """Return ``(version, jars)`` of a usable Kafka, resolving with ``mvn`` on first use.

    Without ``version`` (and without ``INFERSENTRY_KAFKA_VERSION``) a cached version is used if
    there is one, else the newest of :data:`KAFKA_VERSIONS` that resolves.
    """
    pinned = version or os.environ.get("INFERSENTRY_KAFKA_VERSION")
    candidates = (pinned,) if pinned else KAFKA_VERSIONS
    for v in candidates:
        jars = _cached(v)
        if jars:
            return v, jars
    errors: list[str] = []
    for v in candidates:
        home = cache_root() / f"kafka-{v}"
        with _file_lock(cache_root() / f".kafka-{v}.lock"):
            jars = _cached(v)  # another process may have finished meanwhile
            if jars:
                return v, jars
            home.mkdir(parents=True, exist_ok=True)
            try:
                return v, _resolve_version(v, home / "libs")
            except KafkaDevError as exc:
                errors.append(f"{v}: {exc}")
    raise KafkaDevError("no Kafka version could be resolved from Maven Central:\n" + "\n".join(errors))


# --------------------------------------------------------------------------------------------
# configuration


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


def server_properties(data_dir: Path, port: int, controller_port: int, num_partitions: int = 4) -> str:
    """A one-node KRaft broker+controller config with small, test-friendly settings."""
    settings: dict[str, object] = {
        # one process is both broker and the only controller voter
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        # topics
        "num.partitions": num_partitions,
        "auto.create.topics.enable": "true",
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        # internal topics: one replica (the default of 3 cannot be met on one node), few partitions
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "share.coordinator.state.topic.num.partitions": 1,
        # tests: no waiting for more members before the first rebalance
        "group.initial.rebalance.delay.ms": 0,
        # small footprint on a shared 2-core machine
        "num.network.threads": 2,
        "num.io.threads": 2,
        "background.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "num.replica.fetchers": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.hours": 168,
    }
    lines = ["# generated by infersentry (pipeline/kafka_dev.py); rewritten on every start"]
    lines += [f"{k}={v}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def log4j2_properties(target: str = "SYSTEM_OUT", level: str = "INFO") -> str:
    """A Log4j 2 properties config that writes to the console stream ``target``."""
    return "\n".join([
        "status = warn",
        "appender.console.type = Console",
        "appender.console.name = CONSOLE",
        f"appender.console.target = {target}",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d] %p %m (%c)%n",
        f"rootLogger.level = {level}",
        "rootLogger.appenderRef.console.ref = CONSOLE",
        # the request logger and the state-change logger are chatty at INFO
        "logger.request.name = kafka.request.logger",
        "logger.request.level = WARN",
        "logger.statechange.name = state.change.logger",
        "logger.statechange.level = WARN",
        # every client and the broker print their full config at INFO; keep only the warnings
        "logger.config.name = org.apache.kafka.common.config.AbstractConfig",
        "logger.config.level = WARN",
        "",
    ])


# --------------------------------------------------------------------------------------------
# process bookkeeping


def _read_state(data: Path) -> dict[str, object]:
    try:
        return dict(json.loads((data / _STATE_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(data: Path, state: Mapping[str, object]) -> None:
    tmp = data / (_STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(dict(state), indent=2, sort_keys=True))
    tmp.replace(data / _STATE_FILE)


def _our_process(data: Path) -> psutil.Process | None:
    """The broker process recorded in ``data`` if it is still that very process, else None.

    A pid alone could have been reused: the recorded start time and the command line (the
    ``kafka.Kafka`` main class with this data directory's config) must match too.
    """
    try:
        pid = int((data / _PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    state = _read_state(data)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
        created = state.get("create_time")
        if isinstance(created, (int, float)) and abs(proc.create_time() - created) > 1.0:
            return None
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "kafka.Kafka" not in cmd or str(data / "server.properties") not in cmd:
        return None
    return proc


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _alive(proc: psutil.Process) -> bool:
    _reap(proc.pid)
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Outside Linux's ephemeral range (32768-60999), so a client connection cannot grab a port between
# the check and the broker's bind; picked at random, so concurrent sessions rarely collide.
PORT_RANGE = (20000, 32000)


def free_port_pair() -> tuple[int, int]:
    """Two adjacent free ports (client, controller) in :data:`PORT_RANGE`, for a broker of its own
    (tests, benchmarks)."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        if _bindable(port) and _bindable(port + 1):
            return port, port + 1
    raise RuntimeError("no free port pair found")


def _bindable(port: int) -> bool:
    """Free without ``SO_REUSEADDR``: not even a closing connection holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _int(state: Mapping[str, object], key: str) -> int | None:
    value = state.get(key)
    return value if isinstance(value, int) else None


def _info(data: Path, proc: psutil.Process | None, already_running: bool = False,
          startup_s: float | None = None) -> BrokerInfo:
    state = _read_state(data)
    port = _int(state, "port") or 0
    return BrokerInfo(
        running=proc is not None,
        bootstrap=f"127.0.0.1:{port}",
        port=port,
        controller_port=_int(state, "controller_port"),
        data_dir=data,
        pid=proc.pid if proc is not None else None,
        version=str(state["version"]) if "version" in state else None,
        log_file=data / _LOG_FILE,
        already_running=already_running,
        startup_s=startup_s,
    )


# --------------------------------------------------------------------------------------------
# public API


def kafka_status(data_dir: str | os.PathLike[str] | None = None, port: int = 9092) -> BrokerInfo:
    """Report whether the broker recorded in ``data_dir`` (default: that of ``port``) runs."""
    data = _data_path(data_dir, port)
    info = _info(data, _our_process(data))
    if not info.port:
        return BrokerInfo(False, f"127.0.0.1:{port}", port, None, data, None, None, data / _LOG_FILE)
    return info


def kafka_up(
    port: int = 9092,
    data_dir: str | os.PathLike[str] | None = None,
    controller_port: int | None = None,
    timeout: float = 120.0,
    version: str | None = None,
    num_partitions: int = 4,
) -> BrokerInfo:
    """Start the development broker (a no-op reporting it when it already runs).

    Resolves the jars on first use (not counted in ``timeout``), formats a fresh data directory,
    starts the broker detached and waits up to ``timeout`` seconds until it answers an admin
    request. Raises :class:`KafkaDevError` with the log's tail if it does not.
    """
    t0 = time.monotonic()
    data = _data_path(data_dir, port)
    data.mkdir(parents=True, exist_ok=True)
    with _file_lock(data / ".lock"):
        proc = _our_process(data)
        if proc is not None:
            return _info(data, proc, already_running=True)
        state = _read_state(data)
        formatted = (data / "logs" / "meta.properties").exists()
        recorded_port = _int(state, "port")
        if formatted and recorded_port is not None and recorded_port != port:
            raise KafkaDevError(f"{data} belongs to a broker on port {recorded_port}, not {port}")
        if controller_port is None:
            recorded = _int(state, "controller_port") if formatted else None
            if recorded is not None:
                controller_port = recorded
            else:
                controller_port = port + 1 if _port_free(port + 1) else _free_port()
        for p, what in ((port, "client"), (controller_port, "controller")):
            if not _port_free(p):
                raise PortInUseError(f"{what} port {p} is already in use by another process")
        kafka_version, jars = resolve_jars(version or (str(state["version"]) if formatted and "version" in state
                                                       else None))
        classpath = os.pathsep.join(str(j) for j in jars)
        config = data / "server.properties"
        config.write_text(server_properties(data, port, controller_port, num_partitions))
        (data / "log4j2.properties").write_text(log4j2_properties())
        (data / "tools-log4j2.properties").write_text(log4j2_properties("SYSTEM_ERR", "WARN"))
        java = _java()
        if not formatted:
            _format(java, classpath, data, config)
        log_path = data / _LOG_FILE
        if log_path.exists() and log_path.stat().st_size > 20 * 1024 * 1024:
            log_path.replace(data / (_LOG_FILE + ".1"))
        # Serial GC: fewest threads for a small heap on a shared machine.
        cmd = [java, HEAP, "-XX:+UseSerialGC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={data / 'log4j2.properties'}",
               "-cp", classpath, "kafka.Kafka", str(config)]
        with open(log_path, "ab") as log:
            log.write(f"\n==== infersentry kafka_up {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n".encode())
            log.flush()
            child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=data, start_new_session=True, close_fds=True)
        _CHILDREN[child.pid] = child  # kept so the exit status is collected (no zombie, no warning)
        proc = psutil.Process(child.pid)
        (data / _PID_FILE).write_text(f"{child.pid}\n")
        _write_state(data, {"port": port, "controller_port": controller_port, "version": kafka_version,
                            "pid": child.pid, "create_time": proc.create_time(), "java": java})
        _wait_ready(proc, port, data, timeout)
        return _info(data, proc, startup_s=round(time.monotonic() - t0, 2))


def _format(java: str, classpath: str, data: Path, config: Path) -> None:
    cid = new_cluster_id()
    cmd = [java, "-Xmx256m", "-XX:TieredStopAtLevel=1",
           f"-Dlog4j2.configurationFile={data / 'tools-log4j2.properties'}",
           "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(config), "--standalone"]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)
    if proc.returncode != 0:
        raise KafkaDevError(f"formatting {data / 'logs'} failed ({proc.returncode}):\n"
                            f"{(proc.stdout + proc.stderr).strip()[-3000:]}")


def _wait_ready(proc: psutil.Process, port: int, data: Path, timeout: float) -> None:
    from pipeline.sources.kafka import list_topics  # the only module importing kafka-python

    deadline = time.monotonic() + timeout
    last_error = "port not accepting connections yet"
    while time.monotonic() < deadline:
        if not _alive(proc):
            tail = _tail(data / _LOG_FILE, 60)
            error = PortInUseError if ("Address already in use" in tail or "Unable to start acceptor" in tail) \
                else KafkaDevError
            raise error(f"the broker exited during startup; last lines of {data / _LOG_FILE}:\n{tail}")
        if _port_accepts(port):
            try:
                list_topics(f"127.0.0.1:{port}", timeout_s=min(10.0, max(1.0, deadline - time.monotonic())))
                return
            except Exception as exc:  # noqa: BLE001 - any client error means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    _terminate(proc)
    raise KafkaDevError(f"the broker did not answer admin requests within {timeout:.0f}s ({last_error}); "
                        f"stopped it. Last lines of {data / _LOG_FILE}:\n{_tail(data / _LOG_FILE)}")


def _terminate(proc: psutil.Process, grace: float = 30.0) -> None:
    """SIGTERM this one process, wait, then SIGKILL it."""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(proc):
            return
        time.sleep(0.2)
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    for _ in range(50):
        if not _alive(proc):
            return
        time.sleep(0.1)
    raise KafkaDevError(f"broker pid {proc.pid} did not exit after SIGKILL")


def kafka_down(data_dir: str | os.PathLike[str] | None = None, port: int = 9092, grace: float = 30.0) -> bool:
    """Stop the broker recorded in ``data_dir`` (SIGTERM, then SIGKILL after ``grace`` seconds).

    Only the process this module started (pid, start time and command line all match) is
    signalled. Returns whether a broker was running.
    """
    data = _data_path(data_dir, port)
    proc = _our_process(data)
    if proc is not None:
        _terminate(proc, grace)
    with contextlib.suppress(FileNotFoundError):
        (data / _PID_FILE).unlink()
    return proc is not None


def ensure_topics(bootstrap: str, topics: Mapping[str, int], replication_factor: int = 1) -> list[str]:
    """Create the missing topics ``{name: partitions}``; return the names created."""
    from pipeline.sources.kafka import ensure_topics as _ensure

    return _ensure(bootstrap, topics, replication_factor=replication_factor)
