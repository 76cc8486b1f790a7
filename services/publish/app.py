"""publish: consume export batches -> ensure the shared audience -> write inbound files -> report."""

from __future__ import annotations

from collections.abc import Mapping

from services.publish.settings import PublishSettings
from shared.kafka.consumer import Handler
from shared.messages import AudienceExportBatch, Message
from shared.service import KafkaPostgresApp
from shared.topics import AUDIENCE_EXPORT_BATCHES
from shared.unsupported import not_yet_supported


class PublishApp(KafkaPostgresApp):
    name = "publish"
    settings: PublishSettings

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        return {AUDIENCE_EXPORT_BATCHES: (AudienceExportBatch, not_yet_supported("export-publish"))}


def build(settings: PublishSettings) -> PublishApp:
    return PublishApp(settings)
