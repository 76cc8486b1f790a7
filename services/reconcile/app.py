"""reconcile: consume membership and export requests -> match in Postgres -> emit export batches."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import asyncpg
from aiohttp import web

from services.reconcile import consent
from services.reconcile.api import ApiDeps, WorkflowApi
from services.reconcile.audience_gauges import AudienceGauges, refresh_periodically
from services.reconcile.catalog import apply_catalog, load_catalog_file
from services.reconcile.export_guard import ExportGuards
from services.reconcile.export_waiting import ExportQueue
from services.reconcile.exporting import Exporter
from services.reconcile.import_stall import fail_stalled_periodically
from services.reconcile.importing import Importer, ImportGuards
from services.reconcile.insights_page import InsightsPage
from services.reconcile.metrics import PrometheusReconcileMetrics
from services.reconcile.recipient_changes import RecipientChanges
from services.reconcile.rematch import rematch
from services.reconcile.retention import RetentionPolicy, purge_periodically
from services.reconcile.scheduler import Scheduler
from services.reconcile.settings import ReconcileSettings
from services.reconcile.status_dead_letters import DeadLetterTally
from services.reconcile.status_page import StatusPage
from services.reconcile.status_reads import PageReads, create_page_pool
from services.reconcile.stream_metrics import StreamMetrics
from services.reconcile.visitor_links import VisitorLinks, link_all_pending
from shared.db import acquire
from shared.kafka.consumer import Handler
from shared.logging import get_logger
from shared.messages import AudienceExportRequest, AudienceMembership, Message, RecipientChange, VisitorLink
from shared.retry import is_transient
from shared.runs.reporter import RunReporter, import_ends
from shared.service import KafkaPostgresApp
from shared.topics import (
    AUDIENCE_EXPORT_BATCHES,
    AUDIENCE_EXPORT_REQUESTS,
    AUDIENCE_MEMBERSHIP,
    RECIPIENT_CHANGES,
    VISITOR_LINKS,
)

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
        self.run_status = self.reporter  # a membership batch given up fails its import, counted here
        self.reconcile_metrics = PrometheusReconcileMetrics(self.metrics.registry)
        self.stream_metrics = StreamMetrics(self.metrics.registry)
        self.audience_gauges = AudienceGauges(self.metrics.registry)
        self._importer: Importer | None = None
        self._exporter: Exporter | None = None
        self.page_pool: asyncpg.Pool | None = None
        self.page_reads = PageReads(
            lambda: self.page_pool,
            acquire_timeout_s=settings.status_page_acquire_timeout_s,
            cache_s=settings.status_page_cache_s,
            list_sizes_refresh_s=settings.status_page_list_sizes_refresh_s,
        )

    def routes(self, app: web.Application) -> None:
        # The status page reads its own pool per request: it exists only once start() connected.
        dead_letters = DeadLetterTally(
            self.settings,
            cache_s=self.settings.status_dead_letters_refresh_s,
            scan_per_partition=self.settings.status_dead_letters_scan,
            timeout_s=self.settings.status_dead_letters_timeout_s,
        )
        StatusPage(self.page_reads, dead_letters).add_routes(app)
        InsightsPage(self.page_reads).add_routes(app)
        WorkflowApi(self.api_deps()).add_routes(app)

    def api_deps(self) -> ApiDeps:
        settings = self.settings
        return ApiDeps(
            pool=lambda: self.pool,
            exporter=lambda: self._exporter,
            producer=self.producer,
            reporter=self.reporter,
            requests_topic=self.topic(AUDIENCE_EXPORT_REQUESTS),
            guards=ExportGuards(settings.export_max_removal_share, settings.export_guard_min_size),
            allow_undeclared=settings.export_allow_undeclared,
            sample_size=settings.dry_run_sample_size,
            work_mem_mb=settings.export_work_mem_mb,
        )

    async def on_started(self) -> None:
        assert self.pool is not None
        if self.page_pool is None:
            self.page_pool = await create_page_pool(
                self.settings,
                size=self.settings.status_page_pool_size,
                statement_timeout_s=self.settings.status_page_statement_timeout_s,
            )
        if self._catalog is not None:
            async with acquire(self.pool) as conn:
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
            allow_undeclared=self.settings.export_allow_undeclared,
        )
        self.spawn(self._rematch_periodically(), "rematch")
        stall_s = self.settings.import_run_stall_s
        self.spawn(fail_stalled_periodically(self.pool, self.reporter, stall_s), "import-stall")
        retention = RetentionPolicy(
            unmatched_days=self.settings.unmatched_retention_days,
            run_days=self.settings.run_retention_days,
            staging_hours=self.settings.staging_retention_hours,
        )
        self.spawn(
            purge_periodically(self.pool, retention, self.settings.retention_interval_s, self.stream_metrics),
            "retention",
        )
        # Requests waiting for an earlier run of their audience, and runs that never end: off the consumer.
        queue = ExportQueue(self.pool, self._exporter, self.reporter, run_timeout_s=self.settings.export_run_timeout_s)
        poll_s, backoff_max_s = self.settings.export_wait_poll_s, self.settings.retry_backoff_max_s
        self.spawn(queue.run(poll_s, backoff_max_s=backoff_max_s), "export-queue")
        scheduler = Scheduler(self.pool, self.producer, requests_topic=self.topic(AUDIENCE_EXPORT_REQUESTS))
        self.spawn(scheduler.run(self.settings.schedule_poll_s), "scheduler")
        refresh_s = self.settings.audience_gauges_refresh_s
        self.spawn(refresh_periodically(lambda: self.page_pool, self.audience_gauges, refresh_s), "audience-gauges")

    async def _rematch_periodically(self) -> None:
        assert self.pool is not None
        while True:
            await asyncio.sleep(self.settings.rematch_interval_s)
            try:
                async with acquire(self.pool) as conn:
                    await rematch(conn)
                    # A click kept while its recipient's change committed side by side is linked here.
                    await link_all_pending(conn)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("rematch_retry_later", error=type(exc).__name__)

    async def on_stopping(self) -> None:
        if self.page_pool is not None:
            pool, self.page_pool = self.page_pool, None
            try:
                await asyncio.wait_for(pool.close(), 5)
            except TimeoutError:
                pool.terminate()

    def connection_settings(self) -> dict[str, str]:
        # Only allocated as a session uses it; it can only be set before the session's first temporary table.
        return {
            "temp_buffers": f"{self.settings.import_temp_buffers_mb}MB",
            **consent.session_settings(self.settings.import_opted_out),
        }

    def partition_concurrency(self, base_topic: str) -> int:
        # One audience's run ending (a whole snapshot matched and applied) must not hold up the others', nor a
        # large export a small one.
        if base_topic == AUDIENCE_MEMBERSHIP:
            return self.settings.import_concurrency
        if base_topic in (RECIPIENT_CHANGES, VISITOR_LINKS):
            # Each batch is a few short statements: side by side, one partition's round trips overlap another's.
            return self.settings.stream_concurrency
        return self.settings.export_concurrency if base_topic == AUDIENCE_EXPORT_REQUESTS else 1

    def poll_limit(self, base_topic: str) -> int | None:
        # The campaign streams are small messages applied as one set per batch: the larger the batch, the fewer
        # transactions (a poll hands over what has arrived, so a trickle of clicks is not held back).
        if base_topic in (RECIPIENT_CHANGES, VISITOR_LINKS):
            return self.settings.stream_max_batch
        if base_topic == AUDIENCE_MEMBERSHIP:
            # Each message holds up to 10,000 IDs (Python strings): a bound per partition keeps memory flat.
            return self.settings.import_max_poll_batches
        return None

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        assert self._importer is not None
        assert self._exporter is not None
        return {
            AUDIENCE_MEMBERSHIP: (AudienceMembership, self._importer.handle),
            AUDIENCE_EXPORT_REQUESTS: (AudienceExportRequest, self._exporter.handle),
            RECIPIENT_CHANGES: (RecipientChange, RecipientChanges(self.pool, self.stream_metrics).handle),
            VISITOR_LINKS: (VisitorLink, VisitorLinks(self.pool, self.stream_metrics).handle),
        }


def build(settings: ReconcileSettings) -> ReconcileApp:
    return ReconcileApp(settings)
