"""Prometheus metrics of a live run (``infersentry run --metrics-port PORT``).

Throughput, alerts, dead letters, event-time watermark and consumer lag per partition, so the
usual Prometheus/Grafana setup can watch the monitor itself.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from pipeline.engine import BatchResult


class RunMetrics:
    """Metrics of one run, in their own registry (tests can create several)."""

    def __init__(self, run: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = {"run": run}
        self.events = Counter("infersentry_events", "Prediction events scored", ["run"],
                              registry=self.registry).labels(**labels)
        self.duplicates = Counter("infersentry_redeliveries", "Redelivered events skipped", ["run"],
                                  registry=self.registry).labels(**labels)
        self.dead_letters = Counter("infersentry_dead_letters", "Malformed messages dead-lettered", ["run"],
                                    registry=self.registry).labels(**labels)
        self._alerts = Counter("infersentry_alerts", "Alerts raised", ["run", "kind"], registry=self.registry)
        self.watermark = Gauge("infersentry_event_time_watermark_seconds",
                               "Largest event time seen (epoch seconds)", ["run"], registry=self.registry).labels(**labels)
        self._lag = Gauge("infersentry_consumer_lag", "Messages behind the end of the partition",
                          ["run", "topic", "partition"], registry=self.registry)
        self.run = run

    def observe(self, result: BatchResult) -> None:
        self.events.inc(result.events)
        self.duplicates.inc(result.duplicates)
        self.dead_letters.inc(len(result.dead_letters))
        for row in result.alerts:
            self._alerts.labels(run=self.run, kind=row["kind"]).inc()
        if result.max_ts is not None:
            self.watermark.set(result.max_ts)

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        for (topic, partition), value in lag.items():
            self._lag.labels(run=self.run, topic=topic, partition=str(partition)).set(value)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
