"""ingest: outbound files and segment events -> validate -> govern -> emit membership batches."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web
from prometheus_client import Counter

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.event_ledger import EventLedger
from services.ingest.events import SegmentEventHandler
from services.ingest.files import FileImporter
from services.ingest.flush_window import FlushWindow, FlushWindowMetrics, ended_runs_in
from services.ingest.governance import Governance
from services.ingest.outbound_batches import names_from_settings
from services.ingest.part_spool import default_spool_dir, prepare_spool_dir
from services.ingest.realtime_workers import RealtimeWorkers, build_realtime_server
from services.ingest.settings import IngestSettings
from shared.dropzone import DropZone, open_dropzone
from shared.kafka.consumer import Handler
from shared.logging import get_logger
from shared.messages import Message, SegmentEvent
from shared.platform import PlatformClient, PrometheusPlatformMetrics
from shared.retry import Backoff, is_transient
from shared.runs.reporter import RunReporter
from shared.service import KafkaPostgresApp
from shared.topics import AUDIENCE_MEMBERSHIP, SEGMENT_EVENTS

log = get_logger(__name__)


class IngestApp(KafkaPostgresApp):
    name = "ingest"
    settings: IngestSettings

    def __init__(self, settings: IngestSettings) -> None:
        super().__init__(settings)
        # Runs end in ingest when governance refuses them or their delivered batch is rejected: counted here.
        self.status = RunReporter(
            self.producer,
            service=self.name,
            topic_prefix=settings.topic_prefix,
            registry=self.metrics.registry,
            ends=(("import", "blocked"), ("import", "failed")),
        )
        self.run_status = self.status
        # Parsed here so a malformed URL stops the service at start (no I/O happens).
        open_dropzone(settings.import_dropzone_url, s3=settings.s3_options())
        self.platform_metrics = PrometheusPlatformMetrics(self.metrics.registry)
        self.flush_window_metrics = FlushWindowMetrics(self.metrics.registry)
        self.zone: DropZone | None = None
        self.platform: PlatformClient | None = None
        self.files_total = Counter(
            "ab_dropzone_files_total",
            "Drop-zone files handled, by outcome (processed, rejected; unknown_data_source and unrouted: filed "
            "unread, no import audience takes them).",
            ["outcome"],
            registry=self.metrics.registry,
        )
        for outcome in ("processed", "rejected", "unknown_data_source", "unrouted"):
            self.files_total.labels(outcome)  # at 0 from the start, for rate() and absent-vs-zero alerts
        self._directory: AudienceDirectory | None = None
        self._governance: Governance | None = None
        self._files: FileImporter | None = None
        self._events: SegmentEventHandler | None = None
        self.last_scan_ok = False
        # Prepared here so a spool folder that is a link or another user's stops the service at start (exit 2).
        self._spool_dir = prepare_spool_dir(
            Path(settings.import_spool_dir) if settings.import_spool_dir else default_spool_dir()
        )
        # Built here so a missing or empty key file stops the service at start (exit 2).
        self.realtime = build_realtime_server(
            settings, producer=self.producer, registry=self.metrics.registry, topic_prefix=settings.topic_prefix
        )

    async def _govern(self, audience: ImportAudience) -> str | None:
        assert self._governance is not None
        return await self._governance.check(audience)

    async def on_started(self) -> None:
        assert self.pool is not None
        self.zone = open_dropzone(self.settings.import_dropzone_url, s3=self.settings.s3_options())
        self.platform = PlatformClient(self.settings, metrics=self.platform_metrics)
        self._governance = Governance(self.platform, refresh_s=self.settings.metadata_refresh_s, pool=self.pool)
        self._directory = AudienceDirectory(self.pool, refresh_s=self.settings.metadata_refresh_s)
        membership = self.topic(AUDIENCE_MEMBERSHIP)
        ledger = EventLedger(self.pool, retention_h=self.settings.segment_event_ledger_retention_h)
        self._events = SegmentEventHandler(
            directory=self._directory,
            producer=self.producer,
            membership_topic=membership,
            status=self.status,
            governance=self._govern,
            batch_size=self.settings.membership_batch_size,
            ledger=ledger,
            window=FlushWindow(
                ended_runs_in(self.pool),
                limit=self.settings.segment_events_flushes_in_flight,
                max_wait_s=self.settings.segment_events_flush_wait_max_ms / 1000,
                metrics=self.flush_window_metrics,
            ),
        )
        self.spawn(ledger.purge_periodically(3600), "segment-event-ledger-retention")
        self._files = FileImporter(
            zone=self.zone,
            pool=self.pool,
            producer=self.producer,
            membership_topic=membership,
            directory=self._directory,
            governance=self._govern,
            status=self.status,
            batch_size=self.settings.membership_batch_size,
            parts_timeout_s=self.settings.import_parts_timeout_s,
            quiet_period_s=self.settings.import_quiet_period_s,
            names=names_from_settings(self.settings.import_name_templates),
            on_file=lambda _name, outcome: self.files_total.labels(outcome).inc(),
            max_attempts=self.settings.handler_max_attempts,
            max_part_bytes=self.settings.import_max_part_bytes,
            spool_dir=self._spool_dir,
        )
        self.spawn(self._watch_dropzone(), "watch-import-dropzone")
        if self.realtime is not None:
            await self.realtime.start(self._directory)
            if isinstance(self.realtime, RealtimeWorkers):
                self.spawn(self.realtime.watch(), "realtime-workers")  # a receiver process's end ends ingest

    def routes(self, app: web.Application) -> None:
        if isinstance(self.realtime, RealtimeWorkers):
            app.middlewares.append(self.realtime.fresh_metrics)  # /metrics sums the receiver processes' now

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        assert self._events is not None
        return {SEGMENT_EVENTS: (SegmentEvent, self._events)}

    def poll_linger_s(self, base_topic: str) -> float:
        return self.settings.segment_events_linger_ms / 1000 if base_topic == SEGMENT_EVENTS else 0.0

    def poll_limit(self, base_topic: str) -> int | None:
        return self.settings.segment_events_max_poll if base_topic == SEGMENT_EVENTS else None

    def partition_concurrency(self, base_topic: str) -> int:
        return self.settings.segment_events_concurrency if base_topic == SEGMENT_EVENTS else 1

    async def _watch_dropzone(self) -> None:
        assert self._files is not None
        backoff = Backoff(self.settings.retry_backoff_initial_s, self.settings.retry_backoff_max_s)
        while True:
            try:
                await self._files.scan()
                self.last_scan_ok = True
                backoff.reset()
                delay = self.settings.import_poll_interval_s
            except Exception as exc:
                self.last_scan_ok = False
                if is_transient(exc):
                    log.warning("import_scan_retry", error=type(exc).__name__, detail=str(exc)[:300])
                else:
                    log.exception("import_scan_failed")
                delay = backoff.next_delay()
            await asyncio.sleep(delay)

    async def on_stopping(self) -> None:
        if self.realtime is not None:
            await self.realtime.stop()
        if self.platform is not None:
            await self.platform.close()
            self.platform = None
        if self.zone is not None:
            await self.zone.close()
            self.zone = None

    async def readiness(self) -> dict[str, bool]:
        checks = await super().readiness()
        checks["import_dropzone"] = self.last_scan_ok
        if self.realtime is not None:
            checks["realtime"] = self.realtime.ready()
        return checks


def build(settings: IngestSettings) -> IngestApp:
    return IngestApp(settings)
