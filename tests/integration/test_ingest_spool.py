"""A gzip part is inflated once per import (by the batch's check, into a spool the parse reads), against real
Postgres, Kafka and a file:// zone; its spool is freed however the batch ends (imported, rejected, failed,
cancelled), and a gzip bomb is stopped at the limit with memory flat and nothing left spooled."""

from __future__ import annotations

import asyncio
import gzip
import os
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.file_runs import emit_file_runs
from services.ingest.files import FileImporter
from services.ingest.part_spool import BatchSpools
from shared.dropzone.file import FileDropZone
from shared.formats.lines import GzipDecoder
from shared.formats.outbound.info import parse_info
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import deliver_outbound, open_files_under, read_topic
from tests.integration.test_ingest_limits import LIMIT, MIB, deliver_bomb

pytestmark = pytest.mark.integration

EMIT = "services.ingest.files.emit_file_runs"  # where the importer calls it
ROWS = 6000  # ~40 bytes a line: 4 parts of at most 64 KiB of content


async def _allowed(_audience: ImportAudience) -> str | None:
    return None


@dataclass
class Inflations:
    """Every GzipDecoder made and every byte inflated while spied on."""

    decoders: int = 0
    inflated: int = 0


@pytest.fixture
def inflations(monkeypatch: pytest.MonkeyPatch) -> Inflations:
    seen = Inflations()
    init, counted = GzipDecoder.__init__, GzipDecoder._counted

    def spy_init(self: GzipDecoder, *args: Any, **kwargs: Any) -> None:
        seen.decoders += 1
        init(self, *args, **kwargs)

    def spy_counted(self: GzipDecoder, out: bytes) -> bytes:
        seen.inflated += len(out)
        return counted(self, out)

    monkeypatch.setattr(GzipDecoder, "__init__", spy_init)
    monkeypatch.setattr(GzipDecoder, "_counted", spy_counted)
    return seen


@dataclass
class Rig:
    zone: Path
    spool: Path
    pool: asyncpg.Pool
    producer: Producer
    prefix: str
    bootstrap: str
    during_emit: list[list[str]] = field(default_factory=list)  # the open spools, as each emit began

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
            spool_dir=self.spool,
        )

    def deliver(self, ts: int) -> tuple[list[Path], int]:
        """A gzip batch of ROWS IDs in several parts; its parts and their total content size."""
        rows = [(ecid_of(i), (5001,), ()) for i in range(ROWS)]
        batch = deliver_outbound(self.zone, "full", rows, ts, max_part_bytes=64 << 10, gzip=True)
        info = parse_info((self.zone / batch.info_name).read_bytes())
        parts = [self.zone / entry.file_name for entry in info.files]
        return parts, sum(len(gzip.decompress(p.read_bytes())) for p in parts)

    def assert_no_spool_left(self) -> None:
        assert open_files_under(self.spool) == []
        assert list(self.spool.iterdir()) == []


@pytest_asyncio.fixture
async def rig(
    campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}audience-membership", f"{topic_prefix}audience-sync-status"])
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    zone = tmp_path / "import"
    zone.mkdir()
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    rig = Rig(zone, tmp_path / "spool", campaign.pool, producer, topic_prefix, kafka_bootstrap)

    async def watched_emit(*args: Any, **kwargs: Any) -> Any:
        rig.during_emit.append(open_files_under(rig.spool))
        return await emit_file_runs(*args, **kwargs)

    monkeypatch.setattr(EMIT, watched_emit)
    try:
        yield rig
    finally:
        await producer.stop()


async def test_each_gzip_part_is_inflated_once_and_its_spool_freed(rig: Rig, inflations: Inflations) -> None:
    parts, content_bytes = rig.deliver(1_700_000_100_000)
    assert len(parts) >= 3
    importer = rig.importer()
    inflations.decoders = inflations.inflated = 0  # what delivering the batch inflated is not the import's
    assert await importer.scan() == 1
    # One decoder per part, each byte of content inflated once (twice before: the check, then the parse).
    assert inflations.decoders == len(parts)
    assert inflations.inflated == content_bytes
    # The parse read the spools (one per part, open while the runs were emitted); none is left now.
    [spools_then] = rig.during_emit
    assert len(spools_then) == len(parts)
    rig.assert_no_spool_left()
    records = await read_topic(rig.bootstrap, f"{rig.prefix}audience-membership", expect=2)
    ids = [i for r in records for i in AudienceMembership.model_validate_json(r.value or b"").adds]
    assert sorted(ids) == sorted(ecid_of(i) for i in range(ROWS))


async def test_a_rejected_batch_frees_its_spools(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    parts, _ = rig.deliver(1_700_000_100_001)
    info_path = next(rig.zone.glob("*.info"))
    info = parse_info(info_path.read_bytes())
    # The last part's line count is a lie: every other part was checked (and spooled) before it is caught.
    last = info.files[-1]
    totals = info.totals.model_copy(update={"total_number_lines": info.totals.total_number_lines - 1})
    files = (*info.files[:-1], last.model_copy(update={"line_count": last.line_count - 1}))
    lying = info.model_copy(update={"files": files, "totals": totals})
    info_path.write_bytes(lying.to_json())
    spooled: list[str] = []
    new = BatchSpools.new

    def spy_new(self: BatchSpools, part: str) -> Any:
        spooled.append(part)
        return new(self, part)

    monkeypatch.setattr(BatchSpools, "new", spy_new)
    assert await rig.importer().scan() == 1
    assert len(spooled) == len(parts)
    reason = (rig.zone / "rejected" / f"{info_path.name}.reason.txt").read_text()
    assert "line count differs" in reason
    assert rig.during_emit == []  # nothing emitted
    rig.assert_no_spool_left()


async def test_a_failed_or_cancelled_batch_frees_its_spools(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.deliver(1_700_000_100_002)
    importer = rig.importer()

    async def failing_emit(*_args: Any, **_kwargs: Any) -> Any:
        rig.during_emit.append(open_files_under(rig.spool))
        raise RuntimeError("the emit failed")

    monkeypatch.setattr(EMIT, failing_emit)
    assert await importer.scan() == 0  # a surprise: the batch is tried again at the next scan
    assert rig.during_emit[-1] != []
    rig.assert_no_spool_left()

    emitting = asyncio.Event()

    async def stuck_emit(*_args: Any, **_kwargs: Any) -> Any:
        rig.during_emit.append(open_files_under(rig.spool))
        emitting.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(EMIT, stuck_emit)
    scan = asyncio.create_task(importer.scan())
    await asyncio.wait_for(emitting.wait(), 30)
    assert rig.during_emit[-1] != []
    scan.cancel()
    with pytest.raises(asyncio.CancelledError):
        await scan
    rig.assert_no_spool_left()


async def test_a_gzip_bomb_spools_at_most_the_limit_and_frees_it(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = deliver_bomb(rig.zone, 1_700_000_100_003)
    sizes: list[int] = []
    drop = BatchSpools.drop

    def spy_drop(self: BatchSpools, part: str) -> None:
        spool = self._files.get(part)
        if spool is not None:
            spool.flush()
            sizes.append(os.fstat(spool.fileno()).st_size)
        drop(self, part)

    monkeypatch.setattr(BatchSpools, "drop", spy_drop)
    importer = rig.importer()
    tracemalloc.start()
    try:
        assert await importer.scan() == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"
    [spooled] = sizes
    assert LIMIT - MIB <= spooled <= LIMIT  # stopped at the limit: the rest of the bomb never inflated
    reason = (rig.zone / "rejected" / f"{batch.info_name}.reason.txt").read_text()
    assert f"inflates to more than {LIMIT} bytes" in reason
    rig.assert_no_spool_left()
