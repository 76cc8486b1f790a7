"""What publish measures, on the service's registry (``/metrics``). Labels stay low-cardinality."""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import Counter


class PublishMetrics(Protocol):
    def ids_sent(self, op: str, count: int) -> None:
        """IDs of a finished run written to the platform; ``op`` is ``add`` or ``remove``."""

    def file_written(self, mode: str) -> None:
        """One inbound data file (part) uploaded; ``mode`` is ``sync`` or ``overwrite``."""

    def run_reported(self, state: str) -> None:
        """A run was reported ``started``, or ended ``succeeded`` or ``failed`` (once per run and state:
        fed by the status reporter when it counts the run in ``ab_runs_total``)."""


class NoPublishMetrics:
    def ids_sent(self, op: str, count: int) -> None:
        pass

    def file_written(self, mode: str) -> None:
        pass

    def run_reported(self, state: str) -> None:
        pass


class PrometheusPublishMetrics:
    def __init__(self, registry: Any) -> None:
        self._ids = Counter(
            "ab_export_ids_sent_total",
            "IDs written to the platform by finished export runs, by operation (add, remove).",
            ["op"],
            registry=registry,
        )
        self._files = Counter(
            "ab_export_files_written_total",
            "Inbound data files (parts) uploaded to the export drop zone, by mode (sync, overwrite).",
            ["mode"],
            registry=registry,
        )
        self._runs = Counter(
            "ab_export_runs_total",
            "Export runs by the state publish reported (started, succeeded, failed).",
            ["state"],
            registry=registry,
        )

    def ids_sent(self, op: str, count: int) -> None:
        self._ids.labels(op).inc(count)

    def file_written(self, mode: str) -> None:
        self._files.labels(mode).inc()

    def run_reported(self, state: str) -> None:
        self._runs.labels(state).inc()
