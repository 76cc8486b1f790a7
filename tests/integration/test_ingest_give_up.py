"""A drop-zone batch that keeps failing unexpectedly is given up after HANDLER_MAX_ATTEMPTS scans: rejected with
the reason, reported failed, counted; a dependency failure is never given up (real Postgres, Kafka, file:// zone).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.files import FileImporter
from services.ingest.run_ids import batch_run_id
from shared.dropzone import DropZoneUnavailable
from shared.dropzone.file import FileDropZone
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceSyncStatus
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import deliver_outbound, read_topic

pytestmark = pytest.mark.integration


class _FaultyZone(FileDropZone):
    """Reading the parts of batch ``root`` raises ``error`` (a bug the content triggers, or a zone that is down)."""

    def __init__(self, root_dir: Path, root: str, error: Exception) -> None:
        super().__init__(root_dir)
        self.batch_root = root
        self.error = error

    async def read(self, name: str) -> AsyncGenerator[bytes, None]:
        if name.startswith(self.batch_root) and not name.endswith(".info"):
            raise self.error
        async for chunk in super().read(name):
            yield chunk


async def _allowed(_audience: ImportAudience) -> str | None:
    return None


@pytest.mark.parametrize(("error", "given_up"), [(ValueError("a bug"), True), (DropZoneUnavailable("down"), False)])
async def test_a_batch_failing_unexpectedly_is_given_up_after_the_bounded_attempts(
    campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, error: Exception, given_up: bool
) -> None:
    await add_import_audience(campaign.pool, "scan-a", "visitors", 5001)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    membership, status = f"{topic_prefix}audience-membership", f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [membership, status])
    zone_dir = tmp_path / "import"
    zone_dir.mkdir()
    batch = deliver_outbound(zone_dir, "full", [(ecid_of(i), (5001,), ()) for i in range(1, 4)], 1_700_000_000_000)
    files: list[tuple[str, str]] = []
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    try:
        importer = FileImporter(
            zone=_FaultyZone(zone_dir, batch.batch_root, error),
            pool=campaign.pool,
            producer=producer,
            membership_topic=membership,
            directory=AudienceDirectory(campaign.pool),
            governance=_allowed,
            status=RunReporter(producer, service="test", topic_prefix=topic_prefix),
            on_file=lambda name, outcome: files.append((name, outcome)),
            max_attempts=3,
        )
        for _ in range(2):
            if given_up:
                assert await importer.scan() == 0  # failed, left for the next scan
            else:
                with pytest.raises(DropZoneUnavailable):
                    await importer.scan()  # the whole scan waits for the zone
        assert (zone_dir / batch.info_name).exists()
        if given_up:
            assert await importer.scan() == 1
        else:
            with pytest.raises(DropZoneUnavailable):
                await importer.scan()
    finally:
        await producer.stop()

    if not given_up:
        assert (zone_dir / batch.info_name).exists()  # never given up: tried again once the zone is back
        assert files == []
        return
    assert not (zone_dir / batch.info_name).exists()
    assert (zone_dir / "rejected" / batch.info_name).exists()
    assert sorted(outcome for _name, outcome in files) == ["rejected", "rejected"]
    row = await campaign.pool.fetchrow(
        "SELECT state, reason FROM processed_file WHERE batch_root = $1", batch.batch_root
    )
    assert row is not None
    assert row["state"] == "rejected"
    assert "given up after 3 attempts" in row["reason"]
    records = await read_topic(kafka_bootstrap, status, expect=1)
    events = [AudienceSyncStatus.model_validate_json(r.value or b"") for r in records]
    assert [(e.run_id, e.state) for e in events] == [(batch_run_id(batch.batch_root), "failed")]
    assert events[0].reason is not None
    assert "ValueError" in events[0].reason
