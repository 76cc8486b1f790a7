"""ingest's drop-zone scan against real Postgres, Kafka and a file:// zone: one batch's failure stays its own."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.files import FileImporter
from shared.dropzone import ObjectNotFound
from shared.dropzone.file import FileDropZone
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import deliver_outbound, read_topic

pytestmark = pytest.mark.integration


class _VanishingZone(FileDropZone):
    """A zone where the parts of one batch disappear between the listing and the reading (an operator or
    another system removed them)."""

    def __init__(self, root: Path, vanishing: str) -> None:
        super().__init__(root)
        self.vanishing = vanishing

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        if name.startswith(self.vanishing) and not name.endswith(".info"):
            raise ObjectNotFound("drop-zone object not found", url=self.url, name=name)
        async for chunk in super().read(name):
            yield chunk


async def test_a_batch_that_fails_unexpectedly_does_not_hold_up_the_next(
    campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await add_import_audience(campaign.pool, "scan-a", "visitors", 5001)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    membership, status = f"{topic_prefix}audience-membership", f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [membership, status])
    zone_dir = tmp_path / "import"
    zone_dir.mkdir()
    first = deliver_outbound(zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 4)], 1_700_000_000_000)
    second = deliver_outbound(zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(4, 9)], 1_700_000_000_001)

    async def allowed(_audience: ImportAudience) -> str | None:
        return None

    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    try:
        importer = FileImporter(
            zone=_VanishingZone(zone_dir, first.batch_root),
            pool=campaign.pool,
            producer=producer,
            membership_topic=membership,
            directory=AudienceDirectory(campaign.pool),
            governance=allowed,
            status=RunReporter(producer, service="test", topic_prefix=topic_prefix),
        )
        assert await importer.scan() == 1  # the first batch failed; the second went through all the same
    finally:
        await producer.stop()
    ledger = {r["batch_root"]: r["state"] for r in await campaign.pool.fetch("SELECT * FROM processed_file")}
    assert ledger == {second.batch_root: "processed"}
    records = await read_topic(kafka_bootstrap, membership, expect=1)
    batches = [AudienceMembership.model_validate_json(r.value or b"") for r in records]
    assert [sorted(b.adds) for b in batches] == [sorted(ecid_of(i) for i in range(4, 9))]
    # The failed batch stays where it was, to be tried again at the next scan; the other one was filed.
    assert (zone_dir / first.info_name).exists()
    assert not (zone_dir / second.info_name).exists()
