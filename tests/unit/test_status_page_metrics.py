"""The run metric (shared.runs.reporter) and reconcile's ID counters, as the status page's e2e test scrapes them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from services.reconcile.metrics import PrometheusReconcileMetrics
from shared.kafka import OutgoingMessage, Producer
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.runs.states import Direction, RunState
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


def test_reconcile_metrics_count_ids_by_type_and_list_changes() -> None:
    # Runs (ab_runs_total) are counted by shared.runs.reporter.RunReporter, where they are reported.
    registry = CollectorRegistry()
    metrics = PrometheusReconcileMetrics(registry)
    metrics.import_batch("ecid", {"received": 10, "matched": 7, "unmatched": 2, "invalid": 1, "added": 7, "removed": 0})
    metrics.members_changed(3, 4)
    metrics.export_excluded(5)

    assert sample(registry, "ab_runs_total", direction="import", state="failed") is None
    assert sample(registry, "ab_import_ids_total", id_type="ecid", outcome="matched") == 7
    assert sample(registry, "ab_import_ids_total", id_type="declared", outcome="received") == 0
    assert sample(registry, "ab_list_members_changed_total", change="added") == 10
    assert sample(registry, "ab_list_members_changed_total", change="removed") == 4
    assert sample(registry, "ab_export_ids_excluded_total") == 5


async def test_a_service_counts_the_runs_that_end_there_once() -> None:
    registry = CollectorRegistry()
    producer = _RecordingProducer()
    ends: tuple[tuple[Direction, RunState], ...] = (("import", "blocked"), ("import", "failed"))
    status = RunReporter(producer, service="ingest", topic_prefix="p.", registry=registry, ends=ends)
    assert sample(registry, "ab_runs_total", direction="import", state="blocked") == 0  # exists before any run
    run_id, failed = uuid.uuid4(), uuid.uuid4()
    await status.report(RunOutcome(run_id, "import", "started", "a"))
    await status.report(RunOutcome(run_id, "import", "progress", "a", {"received": 3}))
    await status.report(RunOutcome(uuid.uuid4(), "import", "blocked", "b", reason="PII"))
    await status.report(RunOutcome(failed, "import", "failed", reason="md5 differs"))
    await status.report(RunOutcome(failed, "import", "failed", reason="md5 differs"))  # batch after batch
    assert [m.topic for m in producer.sent] == ["p.audience-sync-status"] * 5  # every move is announced
    # Runs handed on are counted where they end; only the ends reached here count, each run once.
    assert sample(registry, "ab_runs_total", direction="import", state="blocked") == 1
    assert sample(registry, "ab_runs_total", direction="import", state="failed") == 1
    assert sample(registry, "ab_runs_total", direction="import", state="progress") is None
    assert sample(registry, "ab_runs_total", direction="import", state="started") is None
