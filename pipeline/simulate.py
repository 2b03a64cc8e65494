"""``infersentry simulate``: produce realistic generated traffic to Kafka at a set rate."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.sources.kafka import KafkaClientSettings, KafkaSink, ensure_topics
from pipeline.traffic import encode_message, iter_events


def simulate(
    settings: KafkaClientSettings,
    *,
    predictions_topic: str = "predictions",
    labels_topic: str | None = "labels",
    n_events: int = 100_000,
    rate: float = 0.0,
    scenario: str = "mixed",
    seed: int = 0,
    partitions: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Send ``n_events`` predictions (and their delayed labels); returns (predictions, labels) sent.

    Messages are keyed by ``client_id`` (by ``model`` where there is none), as the contract asks,
    so one caller's queries stay in one partition. ``rate`` is predictions per second (0: as fast
    as possible); event timestamps come from the generator, not from the clock.
    """
    topics = {predictions_topic: partitions}
    if labels_topic:
        topics[labels_topic] = partitions
    ensure_topics(settings.bootstrap_servers, topics, settings=settings)
    n_pred = n_lab = 0
    start = time.monotonic()
    with KafkaSink(settings, linger_ms=20, batch_size=256 * 1024) as sink:
        for stream, msg in iter_events(scenario, n_events=n_events, seed=seed):
            key = str(msg.get("client_id") or msg.get("model") or "").encode() or None
            if stream == "prediction":
                if rate > 0:
                    ahead = start + n_pred / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                sink.send(predictions_topic, encode_message(msg), key)
                n_pred += 1
                if on_progress is not None and n_pred % 1000 == 0:
                    on_progress(n_pred)
            elif labels_topic:
                sink.send(labels_topic, encode_message(msg), key)
                n_lab += 1
    return n_pred, n_lab
