"""ingest: consume -> validate -> govern -> emit membership batches."""

from __future__ import annotations

from collections.abc import Mapping

from services.ingest.settings import IngestSettings
from shared.kafka.consumer import Handler
from shared.messages import Message, SegmentEvent
from shared.service import KafkaPostgresApp
from shared.topics import SEGMENT_EVENTS
from shared.unsupported import not_yet_supported


class IngestApp(KafkaPostgresApp):
    name = "ingest"
    settings: IngestSettings

    def subscriptions(self) -> Mapping[str, tuple[type[Message], Handler]]:
        return {SEGMENT_EVENTS: (SegmentEvent, not_yet_supported("segment-events"))}


def build(settings: IngestSettings) -> IngestApp:
    return IngestApp(settings)
