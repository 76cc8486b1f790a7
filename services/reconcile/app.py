"""reconcile: consume membership and export requests -> match in Postgres -> emit export batches."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from services.reconcile.catalog import apply_catalog, load_catalog_file
from services.reconcile.export_guard import ExportGuards
from services.reconcile.export_waiting import ExportQueue
from services.reconcile.exporting import Exporter
from services.reconcile.importing import Importer, ImportGuards
from services.reconcile.metrics import PrometheusReconcileMetrics
from services.reconcile.rematch import rematch
from services.reconcile.settings import ReconcileSettings
from services.reconcile.status_page import StatusPage
from shared.kafka.consumer import Handler
from shared.logging import get_logger
from shared.messages import AudienceExportRequest, AudienceMembership, Message
from shared.retry import is_transient
from shared.runs.reporter import RunReporter, import_ends
from shared.service import KafkaPostgresApp
from shared.topics import AUDIENCE_EXPORT_BATCHES, AUDIENCE_EXPORT_REQUESTS, AUDIENCE_MEMBERSHIP

log = get_logger(__name__)


class ReconcileApp(KafkaPostgresApp):
    name = "reconcile"
    settings: ReconcileSettings

    def __init__(self, settings: ReconcileSettings) -> None:
        super().__init__(settings)
        # Read at construction so a bad catalog stops the service at start, not after connecting.
        self._catalog = load_catalog_file(settings.catalog_file) if settings.catalog_file else None
        # The runs that end here: imports end in reconcile; exports only when it refuses or fails them (a run
        # handed to publish is counted there when it ends).
        self.reporter = RunReporter(
            self.producer,
            service=self.name,
            topic_prefix=settings.topic_prefix,
            registry=self.metrics.registry,
            ends=[*import_ends(), ("export", "failed"), ("export", "blocked")],
        )
        self.reconcile_metrics = PrometheusReconcileMetrics(self.metrics.registry)
        self._importer: Importer | None = None
        self._exporter: Exporter | None = None

    def routes(self, app: web.Application) -> None:
        # The status page reads the pool per request: it exists only once start() connected.
        StatusPage(lambda: self.pool).add_routes(app)

    async def on_started(self) -> None:
        assert self.pool is not None
        if self._catalog is not None:
            async with self.pool.acquire() as conn:
                await apply_catalog(conn, self._catalog)
        self._importer = Importer(
            self.pool,
            self.reporter,
            ImportGuards(
                max_removal_share=self.settings.full_import_max_removal_share,
                min_list_size=self.settings.full_import_guard_min_list_size,
            ),
            metrics=self.reconcile_metrics,
            work_mem_mb=self.settings.import_work_mem_mb,
            concurrency=self.settings.import_concurrency,
        )
        self._exporter = Exporter(
            self.pool,
            self.producer,
            batches_topic=self.topic(AUDIENCE_EXPORT_BATCHES),
            reporter=self.reporter,
            batch_size=self.settings.export_batch_size,
            work_mem_mb=self.settings.export_work_mem_mb,
            metrics=self.reconcile_metrics,
            guards=ExportGuards(
                max_removal_share=self.settings.export_max_removal_share,
                min_size=self.settings.export_guard_min_size,
            ),
            concurrency=self.settings.export_concurrency,
        )
        self.spawn(self._rematch_periodically(), "rematch")
        # Requests waiting for an earlier run of their audience, and runs that never end: off the consumer.
        queue = ExportQueue(self.pool, self._exporter, self.reporter, run_timeout_s=self.settings.export_run_timeout_s)
        self.spawn(queue.run(self.settings.export_wait_poll_s), "export-queue")

    async def _rematch_periodically(self) -> None:
        assert self.pool is not None
        while True:
            await asyncio.sleep(self.settings.rematch_interval_s)
            try:
                async with self.pool.acquire() as conn:
                    await rematch(conn)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("rematch_retry_later", error=type(exc).__name__)

    def connection_settings(self) -> dict[str, str]:
        # Only allocated as a session uses it; it can only be set before the session's first temporary table.
        return {"temp_buffers": f"{self.settings.import_temp_buffers_mb}MB"}

    def partition_concurrency(self, base_topic: str) -> int:
        # One audience's run ending (a whole snapshot matched and applied) must not hold up the others', nor a
        # large export a small one.
        if base_topic == AUDIENCE_MEMBERSHIP:
            return self.settings.import_concurrency
        return self.settings.export_concurrency if base_topic == AUDIENCE_EXPORT_REQUESTS else 1

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        assert self._importer is not None
        assert self._exporter is not None
        return {
            AUDIENCE_MEMBERSHIP: (AudienceMembership, self._importer.handle),
            AUDIENCE_EXPORT_REQUESTS: (AudienceExportRequest, self._exporter.handle),
        }


def build(settings: ReconcileSettings) -> ReconcileApp:
    return ReconcileApp(settings)
