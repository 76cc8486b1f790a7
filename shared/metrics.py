"""Prometheus metrics. Each service process owns one registry (so tests can run several in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RuntimeMetrics:
    """What the shared runtime measures: Kafka traffic, dead letters, batch latency, lag, progress."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.service = service
        self.consumed = Counter(
            "ab_messages_consumed_total", "Messages read from Kafka.", ["topic"], registry=self.registry
        )
        self.produced = Counter(
            "ab_messages_produced_total", "Messages acknowledged by Kafka.", ["topic"], registry=self.registry
        )
        self.dead_lettered = Counter(
            "ab_messages_dead_lettered_total",
            "Messages sent to a dead-letter topic, by original topic and error class.",
            ["topic", "error"],
            registry=self.registry,
        )
        self.handler_retries = Counter(
            "ab_handler_retries_total",
            "Batches retried after a transient error.",
            ["topic"],
            registry=self.registry,
        )
        self.dependency_failures = Counter(
            "ab_dependency_failures_total",
            "Batches retried because a dependency (postgres, kafka, other) failed; never dead-lettered.",
            ["topic", "dependency"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "ab_batch_duration_seconds",
            "Time to handle and commit one polled batch of one partition.",
            ["topic"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "ab_consumer_lag",
            "Messages behind the partition's high watermark after the last commit.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.last_commit = Gauge(
            "ab_last_commit_timestamp_seconds",
            "Unix time of the last committed batch (time since = now - this).",
            ["topic"],
            registry=self.registry,
        )
        self.up = Gauge("ab_service_ready", "1 when /readyz answers ready.", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
