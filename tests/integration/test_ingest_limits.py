"""ingest's bounds on what a delivery can make it do, against real Postgres, Kafka and a file:// zone: a gzip
bomb is rejected with its reason and memory stays flat; an oversized ``.info`` is refused unread; a
symlinked ``processed/`` receives nothing."""

from __future__ import annotations

import hashlib
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.files import FileImporter
from services.ingest.outbound_batches import MAX_INFO_BYTES
from shared.dropzone.file import FileDropZone
from shared.formats.outbound import OutboundFileName
from shared.formats.outbound.info import InfoFile, InfoFileEntry, InfoTotals
from shared.formats.parts import GZIP_WBITS
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceSyncStatus
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import deliver_outbound, read_topic

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
LIMIT = 64 * MIB
BOMB = 1024 * MIB  # what the part would inflate to: 16 times the limit


async def _allowed(_audience: ImportAudience) -> str | None:
    return None


@dataclass
class Rig:
    zone: Path
    pool: asyncpg.Pool
    producer: Producer
    prefix: str
    bootstrap: str

    def importer(self) -> FileImporter:
        return FileImporter(
            zone=FileDropZone(self.zone),
            pool=self.pool,
            producer=self.producer,
            membership_topic=f"{self.prefix}audience-membership",
            directory=AudienceDirectory(self.pool, min_refresh_s=0.0),
            governance=_allowed,
            status=RunReporter(self.producer, service="test", topic_prefix=self.prefix),
            max_part_bytes=LIMIT,
        )

    async def statuses(self, expect: int) -> list[AudienceSyncStatus]:
        records = await read_topic(self.bootstrap, f"{self.prefix}audience-sync-status", expect=expect)
        return [AudienceSyncStatus.model_validate_json(r.value or b"") for r in records]


@pytest_asyncio.fixture
async def rig(campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Rig]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}audience-membership", f"{topic_prefix}audience-sync-status"])
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    zone = tmp_path / "import"
    zone.mkdir()
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    try:
        yield Rig(zone, campaign.pool, producer, topic_prefix, kafka_bootstrap)
    finally:
        await producer.stop()


def gzip_bomb(size: int) -> bytes:
    """A valid gzip stream of ``size`` bytes of newlines, a thousandth of that stored."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, GZIP_WBITS)
    block = b"\n" * MIB
    return b"".join(encoder.compress(block) for _ in range(size // MIB)) + encoder.flush()


def deliver_bomb(zone: Path, ts: int) -> OutboundFileName:
    """A batch whose one part is a bomb, and an honest ``.info`` for it (size, md5, lines all true)."""
    batch = OutboundFileName("s3", 7001, 1001, "full", ts)
    part = OutboundFileName("s3", 7001, 1001, "full", ts, 1, True)
    data = gzip_bomb(BOMB)
    (zone / part.name).write_bytes(data)
    entry = InfoFileEntry(
        file_name=part.name,
        byte_size=len(data),
        line_count=BOMB,
        sequence_number=1,
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
    )
    totals = InfoTotals(
        file_name=batch.totals_name, total_byte_size=len(data), total_number_files=1, total_number_lines=BOMB
    )
    (zone / batch.info_name).write_bytes(InfoFile(files=(entry,), totals=totals).to_json())
    return batch


async def test_a_gzip_bomb_is_rejected_with_its_reason_and_memory_stays_flat(rig: Rig) -> None:
    batch = deliver_bomb(rig.zone, 1_700_000_000_000)
    importer = rig.importer()
    tracemalloc.start()
    try:
        assert await importer.scan() == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The decoder holds a piece (1 MiB) at a time, and stops at the limit: nowhere near the 1 GiB content.
    assert peak < 16 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"
    rejected = {p.name for p in (rig.zone / "rejected").iterdir()}
    assert f"{batch.info_name}.reason.txt" in rejected
    reason = (rig.zone / "rejected" / f"{batch.info_name}.reason.txt").read_text()
    assert f"inflates to more than {LIMIT} bytes" in reason
    state = await rig.pool.fetchrow("SELECT state, reason FROM processed_file WHERE batch_root = $1", batch.batch_root)
    assert state is not None
    assert state["state"] == "rejected"
    [status] = await rig.statuses(expect=1)
    assert status.state == "failed"
    assert f"inflates to more than {LIMIT} bytes" in (status.reason or "")


async def test_an_oversized_info_is_refused_unread(rig: Rig) -> None:
    batch = deliver_outbound(rig.zone, "full", [(ecid_of(1), (5001,), ())], 1_700_000_000_001)
    info = rig.zone / batch.info_name
    info.write_bytes(info.read_bytes() + b" " * MAX_INFO_BYTES)
    assert await rig.importer().scan() == 1
    reason = (rig.zone / "rejected" / f"{batch.info_name}.reason.txt").read_text()
    assert f"the .info is larger than {MAX_INFO_BYTES} bytes" in reason


async def test_a_symlinked_processed_folder_receives_nothing(rig: Rig, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (rig.zone / "processed").symlink_to(elsewhere, target_is_directory=True)
    batch = deliver_outbound(rig.zone, "full", [(ecid_of(1), (5001,), ())], 1_700_000_000_002)
    importer = rig.importer()
    for _ in range(2):  # the scan that imports it, and the next, which files the leftovers
        await importer.scan()  # the failure is the batch's own (logged, retried), not the scan's
    assert list(elsewhere.iterdir()) == []  # nothing moved or written through the link
    assert (rig.zone / batch.info_name).exists()  # the batch stays in the inbox for an operator
    assert (rig.zone / "processed").is_symlink()
