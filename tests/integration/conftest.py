"""Fixtures for integration tests against a real local Kafka broker.

One broker (``pipeline.kafka_dev``) serves the whole test session: it is started on a free,
randomly chosen port in a temporary data directory the first time a test asks for
``kafka_broker``, and always stopped at the end (a pytest finaliser, plus ``atexit`` in case
the session dies early).
"""

from __future__ import annotations

import atexit
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.kafka_dev import BrokerInfo, PortInUseError, free_port_pair, kafka_down, kafka_up

ATTEMPTS = 4


@pytest.fixture(scope="session")
def kafka_broker_info(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """The session's broker (started on first use, stopped at session end)."""
    if shutil.which("java") is None:
        pytest.fail("java is not installed: the test command (scripts/test.sh) installs Java 17 and Maven")
    for attempt in range(ATTEMPTS):
        data_dir: Path = tmp_path_factory.mktemp("kafka-broker")
        port, controller_port = free_port_pair()
        atexit.register(kafka_down, data_dir)
        try:
            info = kafka_up(port=port, data_dir=data_dir, controller_port=controller_port, timeout=180)
            break
        except PortInUseError:  # lost a race for the port with another process: new ports, new dir
            kafka_down(data_dir)
            if attempt == ATTEMPTS - 1:
                raise
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


@pytest.fixture
def port_pair() -> tuple[int, int]:
    """Two adjacent free ports (client, controller) for a test that starts its own broker."""
    return free_port_pair()


@pytest.fixture
def pick_port_pair() -> Callable[[], tuple[int, int]]:
    """:func:`free_port_pair` itself, for a test that may need new ports after losing a race."""
    return free_port_pair
