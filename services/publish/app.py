"""publish: consume export batches -> ensure the shared audience -> write inbound files -> report."""

from __future__ import annotations

from collections.abc import Mapping

from services.publish.files import FileOptions
from services.publish.metrics import PrometheusPublishMetrics
from services.publish.publisher import Publisher
from services.publish.receipt_poller import ReceiptPoller
from services.publish.receipts import ReceiptOptions
from services.publish.settings import PublishSettings
from shared.dropzone import DropZone, open_dropzone
from shared.kafka.consumer import Handler
from shared.messages import AudienceExportBatch, Message
from shared.platform import PlatformClient, PrometheusPlatformMetrics
from shared.runs.reporter import RunReporter
from shared.service import KafkaPostgresApp
from shared.topics import AUDIENCE_EXPORT_BATCHES


class PublishApp(KafkaPostgresApp):
    name = "publish"
    settings: PublishSettings

    def __init__(self, settings: PublishSettings) -> None:
        super().__init__(settings)
        # Parsed here so a malformed URL stops the service at start (no I/O happens).
        open_dropzone(settings.export_dropzone_url, s3=settings.s3_options())
        self.platform_metrics = PrometheusPlatformMetrics(self.metrics.registry)
        self.publish_metrics = PrometheusPublishMetrics(self.metrics.registry)
        self.status = RunReporter(
            self.producer,
            service=self.name,
            topic_prefix=settings.topic_prefix,
            registry=self.metrics.registry,
            # publish's own ends (PUBLISH_ENDS)
            ends=(("export", "succeeded"), ("export", "partial"), ("export", "failed")),
            # ab_export_runs_total counts an ended run exactly when ab_runs_total does: they cannot disagree.
            on_counted=lambda run: self.publish_metrics.run_reported(run.state),
        )
        self.run_status = self.status  # an export batch given up fails its run, counted here
        self.zone: DropZone | None = None
        self.platform: PlatformClient | None = None
        self._publisher: Publisher | None = None

    async def on_started(self) -> None:
        assert self.pool is not None
        self.zone = open_dropzone(self.settings.export_dropzone_url, s3=self.settings.s3_options())
        self.platform = PlatformClient(self.settings, metrics=self.platform_metrics)
        self._publisher = Publisher(
            self.pool,
            self.zone,
            self.platform,
            self.status,
            options=FileOptions.from_settings(self.settings),
            metrics=self.publish_metrics,
        )
        if self.settings.export_await_receipts:
            poller = ReceiptPoller(
                self.pool,
                self.platform,
                self.zone,
                self.status,
                ReceiptOptions(
                    poll_s=self.settings.export_receipt_poll_s,
                    poll_max_s=self.settings.export_receipt_poll_max_s,
                    poll_fast_s=self.settings.export_receipt_poll_fast_s,
                    timeout_s=self.settings.export_receipt_timeout_s,
                    work_mem_mb=self.settings.export_record_work_mem_mb,
                ),
                metrics=self.publish_metrics,
            )
            self.spawn(poller.run(), "publish-receipts")

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        assert self._publisher is not None
        return {AUDIENCE_EXPORT_BATCHES: (AudienceExportBatch, self._publisher.handle)}

    async def on_stopping(self) -> None:
        if self.platform is not None:
            await self.platform.close()
            self.platform = None
        if self.zone is not None:
            await self.zone.close()
            self.zone = None


def build(settings: PublishSettings) -> PublishApp:
    return PublishApp(settings)
