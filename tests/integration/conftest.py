"""Fixtures for integration tests against a real local Kafka broker.

One broker (``pipeline.kafka_dev``) serves the whole test session: it is started on a free port
in a temporary data directory the first time a test asks for ``kafka_broker`` and always
stopped at the end (a pytest finaliser, plus ``atexit`` in case the session dies early).
"""

from __future__ import annotations

import atexit
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.kafka_dev import BrokerInfo, kafka_down, kafka_up

PREFERRED_PORT = 19092


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free, else a port the OS picks."""
    if preferred is not None and _free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_broker_info(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """The session's broker (started on first use, stopped at session end)."""
    if shutil.which("java") is None:
        pytest.skip("java is not installed")
    data_dir: Path = tmp_path_factory.mktemp("kafka-broker")
    port = free_port(PREFERRED_PORT)
    controller_port = free_port(port + 1 if port == PREFERRED_PORT else None)
    atexit.register(kafka_down, data_dir)
    info = kafka_up(port=port, data_dir=data_dir, controller_port=controller_port, timeout=180)
    try:
        yield info
    finally:
        kafka_down(data_dir)


@pytest.fixture(scope="session")
def kafka_broker(kafka_broker_info: BrokerInfo) -> str:
    """Bootstrap address (``127.0.0.1:PORT``) of the session's broker."""
    return kafka_broker_info.bootstrap


@pytest.fixture
def unique_name() -> str:
    """A short unique suffix for topic and group names, so tests sharing the broker never collide."""
    return uuid.uuid4().hex[:10]
