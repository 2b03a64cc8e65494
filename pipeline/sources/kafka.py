"""Kafka source and sink: with `kafka_range.py` (group-less time-range reads) the only modules that import ``kafka``.

Every client option that matters is set explicitly, because kafka-python 3 changed several
defaults: no auto-commit (offsets are committed after our own database transaction), offset reset
``earliest``, no deserializers (the pipeline decodes bytes itself, so a poison message cannot make
the consumer loop), ``api_version`` left unset so the client negotiates with the broker.

Rebalance protocol (see :class:`KafkaSource`): the rebalance listener only *records* what changed
into a thread-safe queue (kafka-python runs it on its IO thread, next to the heartbeats, where
blocking work would get the member evicted). The owning loop calls
:meth:`KafkaSource.take_rebalance_events` after every :meth:`KafkaSource.poll` and does the slow
work itself: snapshot the revoked partitions' state, load the assigned partitions' state, seek.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.structs import OffsetAndMetadata
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.events import RawMessage

__all__ = [
    "CommitFailed",
    "KafkaClientSettings",
    "KafkaSink",
    "KafkaSource",
    "KafkaSourceError",
    "Partition",
    "RebalanceEvents",
    "ensure_topics",
    "list_topics",
    "produce_jsonl",
]

log = logging.getLogger(__name__)

#: A partition as ``(topic, partition)``.
Partition = tuple[str, int]


class KafkaSourceError(RuntimeError):
    """A Kafka client operation failed (wraps kafka-python's errors for callers that do not import it)."""


class CommitFailed(KafkaSourceError):
    """An offset commit was rejected, typically because the group rebalanced meanwhile."""


class KafkaClientSettings(BaseModel):
    """Connection and security options shared by consumer, producer and admin client.

    ``from_env`` reads ``INFERSENTRY_BOOTSTRAP`` and ``INFERSENTRY_KAFKA_*`` variables.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="HOST:PORT[,HOST:PORT...]")
    client_id: str = "infersentry"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    request_timeout_ms: int = Field(default=30_000, gt=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> KafkaClientSettings:
        """Settings from the environment, with explicit keyword overrides winning."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("INFERSENTRY_BOOTSTRAP"):
            values["bootstrap_servers"] = env["INFERSENTRY_BOOTSTRAP"]
        for name in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                     "ssl_cafile", "ssl_certfile", "ssl_keyfile", "client_id"):
            value = env.get(f"INFERSENTRY_KAFKA_{name.upper()}")
            if value:
                values[name] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def client_options(self) -> dict[str, Any]:
        """Keyword options for any kafka-python client."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            opts["sasl_plain_username"] = self.sasl_plain_username
            opts["sasl_plain_password"] = (self.sasl_plain_password.get_secret_value()
                                           if self.sasl_plain_password is not None else None)
        if self.security_protocol.endswith("SSL"):
            opts["ssl_cafile"] = self.ssl_cafile
            opts["ssl_certfile"] = self.ssl_certfile
            opts["ssl_keyfile"] = self.ssl_keyfile
        return opts


def _settings(bootstrap: str | None, settings: KafkaClientSettings | None) -> KafkaClientSettings:
    if settings is None:
        return KafkaClientSettings(bootstrap_servers=bootstrap or "127.0.0.1:9092")
    if bootstrap is not None and bootstrap != settings.bootstrap_servers:
        return settings.model_copy(update={"bootstrap_servers": bootstrap})
    return settings


# --------------------------------------------------------------------------------------------
# rebalance bookkeeping


@dataclass(frozen=True, slots=True)
class RebalanceEvents:
    """What changed in this consumer's assignment since the previous ``take_rebalance_events``.

    ``revoked``: partitions the loop owned and must give up (snapshot their state, forget them).
    ``assigned``: partitions the loop must take on (load their state, then seek). A partition that
    left and came back (or was lost) appears in both. Partitions kept throughout appear in neither;
    the source keeps their positions where the loop left them.
    """

    revoked: frozenset[Partition] = frozenset()
    assigned: frozenset[Partition] = frozenset()
    lost: frozenset[Partition] = frozenset()
    raw: tuple[tuple[str, frozenset[Partition]], ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return bool(self.revoked or self.assigned)


class _RecordingListener(ConsumerRebalanceListener):
    """Records rebalance callbacks into a queue; never blocks, never touches the database."""

    def __init__(self, sink: queue.SimpleQueue[tuple[str, frozenset[Partition]]], bump: threading.Event) -> None:
        self._sink = sink
        self._bump = bump

    def _put(self, kind: str, partitions: Iterable[TopicPartition]) -> None:
        self._sink.put((kind, frozenset((tp.topic, tp.partition) for tp in partitions)))
        self._bump.set()

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._put("revoked", revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._put("assigned", assigned)

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self._put("lost", lost)


def _coalesce(owned: frozenset[Partition], events: list[tuple[str, frozenset[Partition]]]
              ) -> tuple[RebalanceEvents, frozenset[Partition]]:
    """Fold raw callbacks (in order) into net changes relative to ``owned``; return them and the new owned set.

    A partition counts as kept only if it stayed in every assignment seen and was never lost;
    a revocation not (yet) followed by an assignment is reported as revoked.
    """
    held = set(owned)
    current = set(owned)
    limbo: set[Partition] = set()
    lost: set[Partition] = set()
    for kind, parts in events:
        if kind == "revoked":
            limbo |= parts
        elif kind == "lost":
            held -= parts
            current -= parts
            limbo -= parts
            lost |= parts
        else:  # assigned: eager protocol, the full new assignment
            held &= parts
            current = set(parts)
            limbo.clear()
    held -= limbo
    current -= limbo
    return (RebalanceEvents(revoked=frozenset(owned - held), assigned=frozenset(current - held),
                            lost=frozenset(lost & owned), raw=tuple(events)), frozenset(current))


# --------------------------------------------------------------------------------------------
# consumer


class KafkaSource:
    """A consumer-group member reading the predictions and labels topics as raw bytes.

    Both topics are assigned with the **range** assignor: for each topic separately it gives
    partition ranges to the members sorted by id, so when both topics have the same partition
    count, partition *p* of ``predictions`` and partition *p* of ``labels`` land on the same member.
    Delayed labels are joined to predictions per partition (producers key both topics by the same
    caller), so that join stays local to one process. (Round-robin would scatter the two topics.)

    Use from a run loop::

        source = KafkaSource(settings, group_id="infersentry")
        while running:
            batch = source.poll(max_records=5000, timeout_ms=500)
            ev = source.take_rebalance_events()        # always, right after poll
            if ev:
                snapshot_state(ev.revoked)             # DB work happens here, not in a callback
                positions = load_state(ev.assigned)    # {(topic, partition): next_offset}
                source.seek_to(positions)
            process(batch)
            with db.transaction():
                write_outputs(); save_positions(positions_after_batch)
            source.commit(positions_after_batch)       # only after the transaction
        source.close()

    A poll during which the group rebalanced returns no records: whatever was fetched is rewound,
    so the loop never sees a record of a partition before it has handled that partition's
    assignment.
    """

    def __init__(
        self,
        settings: KafkaClientSettings | None = None,
        *,
        group_id: str = "infersentry",
        predictions_topic: str = "predictions",
        labels_topic: str | None = "labels",
        max_poll_records: int = 5000,
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3_000,
        fetch_max_wait_ms: int = 500,
        max_partition_fetch_bytes: int = 1024 * 1024,
        isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed",
        bootstrap: str | None = None,
    ) -> None:
        self.settings = _settings(bootstrap, settings)
        self.group_id = group_id
        self.predictions_topic = predictions_topic
        self.labels_topic = labels_topic
        self._streams = {predictions_topic: "predictions"}
        if labels_topic:
            if labels_topic == predictions_topic:
                raise ValueError("predictions and labels topics must differ")
            self._streams[labels_topic] = "labels"
        self._events: queue.SimpleQueue[tuple[str, frozenset[Partition]]] = queue.SimpleQueue()
        self._changed = threading.Event()
        self._pending: list[tuple[str, frozenset[Partition]]] = []
        self._owned: frozenset[Partition] = frozenset()
        self._next: dict[Partition, int] = {}
        self._paused_all = False
        try:
            self._consumer = KafkaConsumer(
                **self.settings.client_options(),
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                key_deserializer=None,
                value_deserializer=None,
                partition_assignment_strategy=[RangePartitionAssignor],
                isolation_level=isolation_level,
                max_poll_records=max_poll_records,
                max_poll_interval_ms=max_poll_interval_ms,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                fetch_max_wait_ms=fetch_max_wait_ms,
                max_partition_fetch_bytes=max_partition_fetch_bytes,
                allow_auto_create_topics=True,
            )
        except kafka_errors.KafkaError as exc:
            raise KafkaSourceError(f"cannot connect to Kafka at {self.settings.bootstrap_servers}: {exc}") from exc
        self._consumer.subscribe(topics=list(self._streams),
                                 listener=_RecordingListener(self._events, self._changed))

    # -- reading -------------------------------------------------------------------------------

    def poll(self, max_records: int = 5000, timeout_ms: int = 500) -> list[RawMessage]:
        """Up to ``max_records`` messages, in offset order within each partition.

        Raises ``RuntimeError`` if rebalance events from an earlier poll were not taken.
        """
        self._drain()
        if self._pending:
            raise RuntimeError("call take_rebalance_events() after every poll() before polling again")
        try:
            fetched = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except kafka_errors.KafkaError as exc:
            raise KafkaSourceError(f"poll failed: {exc}") from exc
        if self._drain():
            self._after_rebalance(fetched)
            return []
        out: list[RawMessage] = []
        for tp, records in fetched.items():
            stream = self._streams.get(tp.topic, tp.topic)
            for r in records:
                out.append(RawMessage(stream=stream, source=tp.topic, partition=tp.partition,
                                      offset=r.offset, value=r.value if r.value is not None else b"",
                                      key=r.key))
            if records:
                self._next[(tp.topic, tp.partition)] = records[-1].offset + 1
        return out

    def _drain(self) -> bool:
        """Move callbacks recorded by the listener into ``_pending``; true if there were any."""
        got = False
        while True:
            try:
                self._pending.append(self._events.get_nowait())
                got = True
            except queue.Empty:
                return got

    def _after_rebalance(self, fetched: Mapping[TopicPartition, list[Any]]) -> None:
        """Rewind what a rebalancing poll fetched; put kept partitions back where the loop left them."""
        assigned = self._consumer.assignment()
        for tp, records in fetched.items():
            if records and tp in assigned:
                self._consumer.seek(tp, records[0].offset)
        for tp in assigned:
            key = (tp.topic, tp.partition)
            if key in self._next:
                self._consumer.seek(tp, self._next[key])
        if self._paused_all and assigned:
            self._consumer.pause(*assigned)

    def take_rebalance_events(self) -> RebalanceEvents:
        """Net assignment changes since the last call (empty when none). Call after every poll."""
        self._drain()
        if not self._pending:
            return RebalanceEvents()
        events, self._pending = self._pending, []
        result, self._owned = _coalesce(self._owned, events)
        for key in result.revoked:
            self._next.pop(key, None)
        return result

    # -- positions -----------------------------------------------------------------------------

    def assignment(self) -> frozenset[Partition]:
        """Partitions currently assigned to this member."""
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def partitions_for(self, topic: str) -> frozenset[int]:
        """Partition numbers of ``topic`` known from metadata (empty if unknown)."""
        return frozenset(self._consumer.partitions_for_topic(topic) or ())

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Make the next poll read ``topic``/``partition`` from ``offset``."""
        try:
            self._consumer.seek(TopicPartition(topic, partition), offset)
        except ValueError as exc:
            raise KafkaSourceError(f"cannot seek {topic}[{partition}] to {offset}: {exc}") from exc
        self._next[(topic, partition)] = offset

    def seek_to(self, positions: Mapping[Partition, int]) -> None:
        """Seek several partitions: ``{(topic, partition): next_offset}``."""
        for (topic, partition), offset in positions.items():
            self.seek(topic, partition, offset)

    def position(self, topic: str, partition: int) -> int | None:
        """Offset of the next record the source will return for an assigned partition."""
        return self._consumer.position(TopicPartition(topic, partition),
                                       timeout_ms=self.settings.request_timeout_ms)

    def commit(self, offsets: Mapping[Partition, int]) -> dict[Partition, int]:
        """Synchronously commit ``{(topic, partition): next_offset}`` to the group.

        Call it only after the database transaction that covers those offsets. Partitions this
        member no longer owns are skipped (their new owner's progress must not be overwritten);
        returns what was committed. Raises :class:`CommitFailed` if the broker rejects it.
        """
        owned = self._consumer.assignment()
        todo = {TopicPartition(t, p): OffsetAndMetadata(int(o), "", -1)
                for (t, p), o in offsets.items() if TopicPartition(t, p) in owned}
        if not todo:
            return {}
        try:
            self._consumer.commit(todo, timeout_ms=self.settings.request_timeout_ms)
        except kafka_errors.KafkaError as exc:
            raise CommitFailed(f"offset commit rejected: {exc}") from exc
        return {(tp.topic, tp.partition): om.offset for tp, om in todo.items()}

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset for a partition (None if none)."""
        return self._consumer.committed(TopicPartition(topic, partition),
                                        timeout_ms=self.settings.request_timeout_ms)

    def lag(self) -> dict[Partition, int]:
        """Messages behind the end of each assigned partition (end offset minus position)."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        try:
            ends = self._consumer.end_offsets(assigned, timeout_ms=self.settings.request_timeout_ms)
            out: dict[Partition, int] = {}
            for tp in assigned:
                pos = self._consumer.position(tp, timeout_ms=self.settings.request_timeout_ms)
                out[(tp.topic, tp.partition)] = max(0, int(ends[tp]) - int(pos if pos is not None else 0))
        except kafka_errors.KafkaError as exc:
            raise KafkaSourceError(f"lag lookup failed: {exc}") from exc
        return out

    # -- flow control --------------------------------------------------------------------------

    def pause(self, partitions: Iterable[Partition] | None = None) -> None:
        """Stop fetching (all assigned partitions when ``partitions`` is None) while staying in the group.

        Keep calling :meth:`poll` (it returns nothing for paused partitions) so the member is not
        considered dead. Pausing everything also covers partitions assigned later.
        """
        if partitions is None:
            self._paused_all = True
            tps = list(self._consumer.assignment())
        else:
            tps = [TopicPartition(t, p) for t, p in partitions]
        if tps:
            self._consumer.pause(*tps)

    def resume(self, partitions: Iterable[Partition] | None = None) -> None:
        """Fetch again from paused partitions (all of them when ``partitions`` is None)."""
        if partitions is None:
            self._paused_all = False
            tps = list(self._consumer.paused())
        else:
            tps = [TopicPartition(t, p) for t, p in partitions]
        if tps:
            self._consumer.resume(*tps)

    def paused(self) -> frozenset[Partition]:
        """Partitions currently paused."""
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.paused())

    def close(self) -> None:
        """Leave the group (no commit: the loop commits explicitly) and close the connections."""
        self._consumer.close(autocommit=False)

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# producer


class KafkaSink:
    """A producer of raw ``(key, value)`` byte pairs with explicit durability options."""

    def __init__(
        self,
        settings: KafkaClientSettings | None = None,
        *,
        bootstrap: str | None = None,
        linger_ms: int = 5,
        batch_size: int = 64 * 1024,
        compression: Literal["gzip"] | None = None,
        acks: Literal["all", 1, 0] = "all",
        enable_idempotence: bool = True,
        max_block_ms: int = 60_000,
    ) -> None:
        self.settings = _settings(bootstrap, settings)
        try:
            self._producer = KafkaProducer(
                **self.settings.client_options(),
                acks=acks,
                enable_idempotence=enable_idempotence and acks == "all",
                linger_ms=linger_ms,
                batch_size=batch_size,
                compression_type=compression,
                key_serializer=None,
                value_serializer=None,
                max_block_ms=max_block_ms,
            )
        except kafka_errors.KafkaError as exc:
            raise KafkaSourceError(f"cannot connect to Kafka at {self.settings.bootstrap_servers}: {exc}") from exc
        self._failed: list[BaseException] = []

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Queue one message; delivery errors surface in :meth:`flush`."""
        future = self._producer.send(topic, value=value, key=key)
        future.add_errback(self._failed.append)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything queued is acknowledged; raise if any message failed."""
        try:
            self._producer.flush(timeout=timeout_s)
        except kafka_errors.KafkaError as exc:
            raise KafkaSourceError(f"flush failed: {exc}") from exc
        if self._failed:
            first, n = self._failed[0], len(self._failed)
            self._failed.clear()
            raise KafkaSourceError(f"{n} message(s) were not delivered; first error: {first}")

    def close(self) -> None:
        """Flush and close."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def produce_jsonl(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    settings: KafkaClientSettings | None = None,
    linger_ms: int = 5,
    batch_size: int = 64 * 1024,
    compression: Literal["gzip"] | None = None,
    rate: float = 0.0,
) -> int:
    """Send ``(key, value)`` pairs (values are JSON lines as bytes) to ``topic``; return the count.

    ``rate`` > 0 paces sending to about that many messages per second (0: as fast as possible).
    Returns after every message is acknowledged by all in-sync replicas (``acks=all``).
    """
    n = 0
    start = time.monotonic()
    with KafkaSink(settings, bootstrap=bootstrap, linger_ms=linger_ms, batch_size=batch_size,
                   compression=compression) as sink:
        for key, value in records:
            if rate > 0:
                ahead = start + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            sink.send(topic, value, key)
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# admin


def _admin(bootstrap: str | None, settings: KafkaClientSettings | None, timeout_s: float) -> KafkaAdminClient:
    s = _settings(bootstrap, settings)
    opts = s.client_options()
    opts["request_timeout_ms"] = int(timeout_s * 1000)
    opts["bootstrap_timeout_ms"] = int(timeout_s * 1000)
    return KafkaAdminClient(**opts)


def list_topics(bootstrap: str, timeout_s: float = 10.0, settings: KafkaClientSettings | None = None) -> set[str]:
    """Names of the topics on the cluster (an admin request; used as the readiness probe)."""
    admin = _admin(bootstrap, settings, timeout_s)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    settings: KafkaClientSettings | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics of ``{name: partitions}`` that do not exist yet; return the names created.

    Existing topics are left alone (a differing partition count is logged, not changed).
    Waits until every created topic has a leader for each partition.
    """
    admin = _admin(bootstrap, settings, timeout_s)
    try:
        existing = {t["name"]: len(t.get("partitions") or []) for t in admin.describe_topics()}
        for name, n in topics.items():
            if name in existing and existing[name] != n:
                log.warning("topic %s exists with %d partitions (wanted %d); left as is", name, existing[name], n)
        missing = {name: {"num_partitions": int(n), "replication_factor": int(replication_factor)}
                   for name, n in topics.items() if name not in existing}
        if not missing:
            return []
        result = admin.create_topics(missing, timeout_ms=int(timeout_s * 1000), raise_errors=False)
        created: list[str] = []
        for t in result.get("topics", []):
            code = int(t.get("error_code", 0))
            if code == 0:
                created.append(t["name"])
            elif kafka_errors.for_code(code) is not kafka_errors.TopicAlreadyExistsError:
                raise KafkaSourceError(f"cannot create topic {t['name']}: {kafka_errors.for_code(code).__name__}"
                                       f" {t.get('error_message') or ''}".rstrip())
        admin.wait_for_topics(list(missing), timeout_ms=int(timeout_s * 1000))
        return sorted(created)
    except kafka_errors.KafkaError as exc:
        raise KafkaSourceError(f"topic admin on {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()
