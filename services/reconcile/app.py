"""reconcile: consume membership and export requests -> match in Postgres -> emit export batches."""

from __future__ import annotations

from collections.abc import Mapping

from services.reconcile.settings import ReconcileSettings
from shared.kafka.consumer import Handler
from shared.messages import AudienceExportRequest, AudienceMembership, Message
from shared.service import KafkaPostgresApp
from shared.topics import AUDIENCE_EXPORT_REQUESTS, AUDIENCE_MEMBERSHIP
from shared.unsupported import not_yet_supported


class ReconcileApp(KafkaPostgresApp):
    name = "reconcile"
    settings: ReconcileSettings

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        return {
            AUDIENCE_MEMBERSHIP: (AudienceMembership, not_yet_supported("import")),
            AUDIENCE_EXPORT_REQUESTS: (AudienceExportRequest, not_yet_supported("export")),
        }


def build(settings: ReconcileSettings) -> ReconcileApp:
    return ReconcileApp(settings)
