"""reconcile: consume membership and export requests -> match in Postgres -> emit export batches."""

from __future__ import annotations

from collections.abc import Mapping

from services.reconcile.catalog import apply_catalog, load_catalog_file
from services.reconcile.importing import Importer, ImportGuards
from services.reconcile.settings import ReconcileSettings
from shared.kafka.consumer import Handler
from shared.messages import AudienceExportRequest, AudienceMembership, Message
from shared.service import KafkaPostgresApp
from shared.status import StatusReporter
from shared.topics import AUDIENCE_EXPORT_REQUESTS, AUDIENCE_MEMBERSHIP
from shared.unsupported import not_yet_supported


class ReconcileApp(KafkaPostgresApp):
    name = "reconcile"
    settings: ReconcileSettings

    def __init__(self, settings: ReconcileSettings) -> None:
        super().__init__(settings)
        # Read at construction so a bad catalog stops the service at start, not after connecting.
        self._catalog = load_catalog_file(settings.catalog_file) if settings.catalog_file else None
        self.status = StatusReporter(self.producer, service=self.name, topic_prefix=settings.topic_prefix)
        self._importer: Importer | None = None

    async def on_started(self) -> None:
        assert self.pool is not None
        if self._catalog is not None:
            async with self.pool.acquire() as conn:
                await apply_catalog(conn, self._catalog)
        self._importer = Importer(
            self.pool,
            self.status,
            ImportGuards(
                max_removal_share=self.settings.full_import_max_removal_share,
                min_list_size=self.settings.full_import_guard_min_list_size,
            ),
        )

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        assert self._importer is not None
        return {
            AUDIENCE_MEMBERSHIP: (AudienceMembership, self._importer.handle),
            AUDIENCE_EXPORT_REQUESTS: (AudienceExportRequest, not_yet_supported("export")),
        }


def build(settings: ReconcileSettings) -> ReconcileApp:
    return ReconcileApp(settings)
