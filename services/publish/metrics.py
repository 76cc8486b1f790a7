"""What publish measures, on the service's registry (``/metrics``). Labels stay low-cardinality."""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import Counter, Gauge


class PublishMetrics(Protocol):
    def ids_sent(self, op: str, count: int) -> None:
        """IDs of a finished run written to the platform; ``op`` is ``add`` or ``remove``."""

    def file_written(self, mode: str) -> None:
        """One inbound data file (part) uploaded; ``mode`` is ``sync`` or ``overwrite``."""

    def run_reported(self, state: str) -> None:
        """A run was reported ``started``, or ended ``succeeded``, ``partial`` or ``failed`` (once per run and
        state: fed by the status reporter when it counts the run in ``ab_runs_total``)."""

    def receipt_timed_out(self) -> None:
        """A file had no receipt within ``EXPORT_RECEIPT_TIMEOUT_S`` (its run ends ``failed``)."""

    def lines_rejected(self, reason: str, count: int) -> None:
        """Lines of uploaded files the platform did not apply, by reason."""

    def receipt_poll_delay(self, seconds: float) -> None:
        """The receipt poller waits this long before its next poll (receipt_pacing.py)."""


class NoPublishMetrics:
    def ids_sent(self, op: str, count: int) -> None:
        pass

    def file_written(self, mode: str) -> None:
        pass

    def run_reported(self, state: str) -> None:
        pass

    def receipt_timed_out(self) -> None:
        pass

    def lines_rejected(self, reason: str, count: int) -> None:
        pass

    def receipt_poll_delay(self, seconds: float) -> None:
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
            "Export runs by the state publish reported (started, succeeded, partial, failed).",
            ["state"],
            registry=registry,
        )
        self._timeouts = Counter(
            "ab_export_receipt_timeouts_total",
            "Inbound files the platform had not processed within EXPORT_RECEIPT_TIMEOUT_S (alert on any).",
            registry=registry,
        )
        self._rejected = Counter(
            "ab_export_lines_rejected_total",
            "Lines of uploaded inbound files the platform did not apply, by reason.",
            ["reason"],
            registry=registry,
        )
        self._poll_delay = Gauge(
            "ab_export_receipt_poll_delay_seconds",
            "How long the receipt poller waits before its next poll (EXPORT_RECEIPT_POLL_S while receipts come "
            "or an upload is recent, backing off to EXPORT_RECEIPT_POLL_MAX_S).",
            registry=registry,
        )

    def ids_sent(self, op: str, count: int) -> None:
        self._ids.labels(op).inc(count)

    def file_written(self, mode: str) -> None:
        self._files.labels(mode).inc()

    def run_reported(self, state: str) -> None:
        self._runs.labels(state).inc()

    def receipt_timed_out(self) -> None:
        self._timeouts.inc()

    def lines_rejected(self, reason: str, count: int) -> None:
        self._rejected.labels(reason).inc(count)

    def receipt_poll_delay(self, seconds: float) -> None:
        self._poll_delay.set(seconds)
