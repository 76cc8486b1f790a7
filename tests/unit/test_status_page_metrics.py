"""reconcile's and ingest's run and ID counters (the ones the status page's e2e test scrapes from a process)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from services.ingest.metrics import CountingStatusReporter
from services.reconcile.metrics import PrometheusReconcileMetrics
from shared.kafka import OutgoingMessage, Producer
from shared.settings import KafkaSettings


class _RecordingProducer(Producer):
    """A producer that keeps what it is given instead of talking to Kafka."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings(), "test")
        self.sent: list[OutgoingMessage] = []

    async def send(self, messages: Sequence[OutgoingMessage]) -> None:
        self.sent.extend(messages)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    value: float | None = registry.get_sample_value(name, labels)
    return value


def test_reconcile_metrics_count_runs_once_and_ids_by_type() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusReconcileMetrics(registry)
    run_id = uuid.uuid4()
    for _ in range(3):  # every batch of a bad run is rejected: still one failed run
        metrics.run_finished("import", "failed", run_id)
    metrics.import_batch("ecid", {"received": 10, "matched": 7, "unmatched": 2, "invalid": 1, "added": 7, "removed": 0})
    metrics.members_changed(3, 4)
    metrics.export_excluded(5)

    assert sample(registry, "ab_runs_total", direction="import", state="failed") == 1
    assert sample(registry, "ab_runs_total", direction="import", state="succeeded") == 0
    assert sample(registry, "ab_import_ids_total", id_type="ecid", outcome="matched") == 7
    assert sample(registry, "ab_import_ids_total", id_type="declared", outcome="received") == 0
    assert sample(registry, "ab_list_members_changed_total", change="added") == 10
    assert sample(registry, "ab_list_members_changed_total", change="removed") == 4
    assert sample(registry, "ab_export_ids_excluded_total") == 5


async def test_ingest_counts_the_runs_that_end_there() -> None:
    registry = CollectorRegistry()
    producer = _RecordingProducer()
    status = CountingStatusReporter(producer, service="ingest", topic_prefix="p.", registry=registry)
    run_id = uuid.uuid4()
    await status.report(run_id, direction="import", state="started", audience_id="a")
    await status.report(run_id, direction="import", state="progress", audience_id="a", counts={"received": 3})
    await status.report(uuid.uuid4(), direction="import", state="blocked", audience_id="b", reason="PII")
    await status.report(uuid.uuid4(), direction="import", state="failed", reason="md5 differs")
    assert [m.topic for m in producer.sent] == ["p.audience-sync-status"] * 4  # still reported, as before
    # Runs handed to reconcile are counted there when they end; only ingest's own ends count here.
    assert sample(registry, "ab_runs_total", direction="import", state="blocked") == 1
    assert sample(registry, "ab_runs_total", direction="import", state="failed") == 1
    assert sample(registry, "ab_runs_total", direction="import", state="progress") is None
