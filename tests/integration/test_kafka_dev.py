"""The local development broker: jars, config, start/stop/status, and safety of ``kafka_down``."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipeline.kafka_dev import (
    BrokerInfo,
    PortInUseError,
    ensure_topics,
    kafka_down,
    kafka_status,
    kafka_up,
    new_cluster_id,
    resolve_jars,
    server_properties,
)
from pipeline.sources.kafka import list_topics


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cluster_ids_are_valid() -> None:
    for _ in range(2000):
        cid = new_cluster_id()
        assert len(cid) == 22 and "=" not in cid and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_server_properties_single_node(tmp_path: Path) -> None:
    text = server_properties(tmp_path, 9092, 9093)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["num.partitions"] == "4" and props["auto.create.topics.enable"] == "true"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor"):
        assert props[key] == "1"
    assert props["log.dirs"] == str(tmp_path / "logs")


def test_jars_include_runtime_scope_and_log_binding() -> None:
    version, jars = resolve_jars()
    names = {j.name for j in jars}
    assert version.startswith("4.")
    assert f"kafka_2.13-{version}.jar" in names
    assert any(n.startswith("kafka-server-") for n in names)  # runtime-scoped dependency
    core = next(n for n in names if n.startswith("log4j-core-"))
    assert core.replace("log4j-core-", "log4j-slf4j-impl-") in names
    assert [n for n in names if n.startswith("slf4j-api-")] == ["slf4j-api-1.7.36.jar"]


@pytest.mark.kafka
def test_session_broker_status(kafka_broker_info: BrokerInfo) -> None:
    status = kafka_status(kafka_broker_info.data_dir)
    assert status.running and status.pid is not None and status.pid == kafka_broker_info.pid
    assert status.bootstrap == kafka_broker_info.bootstrap
    proc = psutil.Process(status.pid)
    assert "kafka.Kafka" in proc.cmdline() and "-Xmx512m" in proc.cmdline()
    assert os.getpgid(status.pid) == status.pid  # detached in its own process group
    assert (kafka_broker_info.data_dir / "kafka.pid").read_text().strip() == str(status.pid)
    assert "Kafka Server started" in kafka_broker_info.log_file.read_text()  # log4j binding works


@pytest.mark.kafka
def test_second_up_is_a_noop(kafka_broker_info: BrokerInfo) -> None:
    again = kafka_up(port=kafka_broker_info.port, data_dir=kafka_broker_info.data_dir)
    assert again.already_running and again.pid == kafka_broker_info.pid
    assert "already running" in again.describe()


@pytest.mark.kafka
def test_ensure_topics_creates_only_missing(kafka_broker: str, unique_name: str) -> None:
    a, b = f"a-{unique_name}", f"b-{unique_name}"
    assert ensure_topics(kafka_broker, {a: 4, b: 2}) == sorted([a, b])
    assert ensure_topics(kafka_broker, {a: 4, b: 2}) == []
    assert {a, b} <= list_topics(kafka_broker)


@pytest.mark.kafka
def test_up_down_restart_cycle(tmp_path: Path, unique_name: str, port_pair: tuple[int, int]) -> None:
    """A second, short-lived broker: up, status, down, status, restart keeps its topics, down."""
    port, cport = port_pair
    data = tmp_path / "broker"
    info = kafka_up(port=port, data_dir=data, controller_port=cport, timeout=180)
    try:
        assert info.running and not info.already_running and info.pid is not None
        assert kafka_status(data).running
        topic = f"keep-{unique_name}"
        ensure_topics(info.bootstrap, {topic: 3})
        assert kafka_down(data) is True
        assert not psutil.pid_exists(info.pid) or psutil.Process(info.pid).status() == psutil.STATUS_ZOMBIE
        stopped = kafka_status(data)
        assert not stopped.running and stopped.pid is None
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert kafka_down(data) is False  # nothing left to stop

        again = kafka_up(port=port, data_dir=data, timeout=180)  # no reformat: same cluster
        assert again.running and again.controller_port == cport
        assert topic in list_topics(again.bootstrap)
    finally:
        kafka_down(data)
    assert not kafka_status(data).running


def test_down_never_signals_a_foreign_process(tmp_path: Path) -> None:
    """A pid file pointing at a process that is not our broker is ignored."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "kafka.pid").write_text(f"{sleeper.pid}\n")
        assert kafka_status(tmp_path).running is False
        assert kafka_down(tmp_path) is False
        assert sleeper.poll() is None  # still alive
    finally:
        sleeper.kill()
        sleeper.wait()


def test_up_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(PortInUseError, match="in use"):
            kafka_up(port=busy, data_dir=tmp_path / "d", controller_port=free_port())
