"""The SQL schema, as SQLAlchemy Core tables (the Alembic migrations create the same).

Every table carries its ``run`` (live, or a named replay), so runs never mix. Timestamps that
dashboards filter on are stored as epoch seconds (``*_ts`` float columns, Grafana's
``$__unixEpochFilter``); the exact RFC 3339 strings the alert export needs are stored beside them.
A ``model_version`` that is absent is stored as ``''`` in key columns of time-series tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),  # live | replay
    Column("source", Text, nullable=False),
    Column("input_fingerprint", String(64)),
    Column("config_hash", String(64), nullable=False),
    Column("config_json", Text, nullable=False),
    Column("version", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # running | finished | failed
    Column("events", BigInteger, nullable=False, default=0),
    Column("dead_letters", Integer, nullable=False, default=0),
    Column("duplicates", BigInteger),  # redeliveries skipped (NULL: written before they were counted)
    Column("first_event_ts", Float),
    Column("last_event_ts", Float),
    Column("started_at", String(32)),  # wall clock, informational only
    Column("finished_at", String(32)),
)

alerts = Table(
    "alerts",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("alert_id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("detector", String(64), nullable=False),
    Column("model", String(256), nullable=False),
    Column("model_version", String(128)),
    Column("partition", Integer, nullable=False, default=0),
    Column("client_id", String(256)),
    Column("raised_at", String(32), nullable=False),
    Column("raised_ts", Float, nullable=False),
    Column("trigger_event_id", String(128), nullable=False),
    Column("window_start", String(32)),
    Column("window_end", String(32)),
    Column("window_end_ts", Float),
    Column("updated_at", String(32)),
    Column("event_ids", Text, nullable=False),  # JSON array
    Column("score", Float, nullable=False),
    Column("threshold", Float),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False, default="open"),
    Column("explanation", Text, nullable=False),  # JSON object
    Column("config_hash", String(64), nullable=False),
    Column("reviewer", String(128)),
    Column("reviewed_at", String(32)),
    Column("review_note", Text),
    Index("ix_alerts_run_raised", "run", "raised_ts"),
    Index("ix_alerts_status_raised", "status", "raised_ts"),
    Index("ix_alerts_kind_raised", "kind", "raised_ts"),
    Index("ix_alerts_model_raised", "model", "raised_ts"),
    Index("ix_alerts_client", "client_id"),
)

alert_reviews = Table(
    "alert_reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run", String(128), nullable=False),
    Column("alert_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reviewer", String(128)),
    Column("note", Text),
    Column("at", String(32), nullable=False),  # wall clock of the review
    Index("ix_alert_reviews_alert", "run", "alert_id"),
)

flagged_events = Table(
    "flagged_events",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("detector", String(64), primary_key=True),
    Column("model", String(256), nullable=False),
    Column("model_version", String(128)),
    Column("partition", Integer, nullable=False, default=0),
    Column("client_id", String(256)),
    Column("ts", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("threshold", Float),
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the event as received (JSON)
    Index("ix_flagged_run_ts", "run", "ts"),
    Index("ix_flagged_client", "run", "client_id"),
)

window_stats = Table(
    "window_stats",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("model", String(256), primary_key=True),
    Column("model_version", String(128), primary_key=True),  # '' when absent
    Column("partition", Integer, primary_key=True),
    Column("detector", String(64), primary_key=True),
    Column("stat", String(256), primary_key=True),
    Column("window", Integer, primary_key=True),
    Column("window_start", Float, nullable=False),
    Column("window_end", Float, nullable=False),
    Column("n", Integer, nullable=False),
    Column("location", Float),
    Column("spread", Float),
    Column("score", Float),
    Column("threshold", Float),
    Index("ix_window_stats_series", "run", "model", "stat", "window_end"),
    Index("ix_window_stats_time", "window_end"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("source", String(512), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("position", BigInteger, primary_key=True),  # Kafka offset or file line number
    Column("stream", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("raw_preview", Text, nullable=False),  # first bytes, decoded with replacement
    Column("event_time_ts", Float),  # event time of the stream when it arrived
    Index("ix_dead_letters_run_time", "run", "event_time_ts"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("scope", String(256), primary_key=True),  # e.g. "file" or "partition-3"
    Column("positions", Text, nullable=False),  # JSON: {"topic:partition": next_offset}
    Column("state", LargeBinary, nullable=False),
    Column("state_format", String(32), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("last_event_ts", Float),
    Column("duplicates", BigInteger),  # redeliveries skipped in this scope
    Column("saved_at", String(32)),  # wall clock, informational only
)

ALL_TABLES = (runs, alerts, alert_reviews, flagged_events, window_stats, dead_letters, checkpoints)
