"""publish: consume export batches -> ensure the shared audience -> write inbound files -> report."""

from __future__ import annotations

from collections.abc import Mapping

from services.publish.files import FileOptions
from services.publish.metrics import PrometheusPublishMetrics
from services.publish.publisher import Publisher
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
            ends=(("export", "succeeded"), ("export", "failed")),  # publish's own ends (PUBLISH_ENDS)
            # ab_export_runs_total counts an ended run exactly when ab_runs_total does: they cannot disagree.
            on_counted=lambda run: self.publish_metrics.run_reported(run.state),
        )
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
