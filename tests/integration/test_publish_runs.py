"""publish's run flow in-process against real Postgres, Kafka (status events) and ecsim (the REST API).

Runs, audiences and data sources are recorded as reconcile records them; batches are handed to the
publisher as the consumer loop would; files land in a temporary file drop zone and are read back with the
platform's own inbound parser.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from services.ecsim.zones import FaultyDropZone, ZoneFault
from services.publish.export_run import load_run
from services.publish.files import FileOptions
from services.publish.metrics import PrometheusPublishMetrics
from services.publish.publisher import STEP_FILES, Publisher, RunNotRetryable, retry_run
from shared.dropzone import DropZoneUnavailable, FileDropZone, ObjectInfo
from shared.formats.inbound import InboundParser, InboundRecord
from shared.kafka import Delivery, Producer, ensure_topics
from shared.messages import AudienceExportBatch, AudienceSyncStatus
from shared.metrics import RuntimeMetrics
from shared.platform import PlatformClient
from shared.runs import store
from shared.runs.reporter import RunReporter
from shared.runs.states import IllegalTransition
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_export_run, ecid_of, email_of, hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint, ecsim, ecsim_server  # noqa: F401
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

PARTNER = "acme"
PLATFORM_SEED = {
    "datasources": [
        {"dataSourceId": 1001, "name": "Campaign (MID)", "integrationCode": "ac-mid", "idType": "COOKIE"},
        {"dataSourceId": 1002, "name": "Campaign (DeclaredId)", "integrationCode": "ac-declared"},
    ]
}


def export_batches(
    run_id: uuid.UUID,
    audience_id: str,
    *,
    adds: Sequence[str] = (),
    removes: Sequence[str] = (),
    mode: str = "append",
    data_source: str = "visitors",
    dpid: int = 1001,
    size: int = 50,
    received: int | None = None,
    excluded: int = 0,
) -> list[AudienceExportBatch]:
    """A run's batches as reconcile emits them: ``size`` IDs each, the last one with the totals."""
    items = [(i, True) for i in adds] + [(i, False) for i in removes]
    chunks = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
    out = []
    for seq, chunk in enumerate(chunks):
        last = seq == len(chunks) - 1
        totals = None
        if last:
            totals = {
                "received": len(adds) + excluded if received is None else received,
                "excluded": excluded,
                "adds": len(adds),
                "removes": len(removes),
                "batches": len(chunks),
            }
        out.append(
            AudienceExportBatch.model_validate(
                {
                    "run_id": run_id,
                    "seq": seq,
                    "last": last,
                    "audience_id": audience_id,
                    "data_source": data_source,
                    "dpid": dpid,
                    "mode": mode,
                    "adds": [i for i, add in chunk if add],
                    "removes": [i for i, add in chunk if not add],
                    "totals": totals,
                }
            )
        )
    return out


def delivery(batch: AudienceExportBatch, offset: int = 0) -> Delivery[AudienceExportBatch]:
    return Delivery(batch, "audience-export-batches", 0, offset, batch.key(), ())


def read_files(root: Path) -> dict[str, list[InboundRecord]]:
    """Every inbound file under ``root`` (by path relative to it), parsed; fails on any bad line."""
    out: dict[str, list[InboundRecord]] = {}
    for path in sorted(root.rglob("ftp_dpm_*")):
        parser = InboundParser(path.name)
        items = list(parser.parse([path.read_bytes()]))
        assert parser.counters.format_errors == 0, items
        out[path.relative_to(root).as_posix()] = [r for r in items if isinstance(r, InboundRecord)]
    return out


@dataclass
class Rig:
    campaign: Campaign
    ecsim: EcsimEndpoint
    root: Path
    zone: FaultyDropZone
    platform: PlatformClient
    status: RunReporter
    producer: Producer
    topic_prefix: str
    bootstrap: str
    status_topic: str

    def publisher(self, **options: Any) -> Publisher:
        values: dict[str, Any] = {
            "partner": PARTNER,
            "max_part_bytes": 1 << 20,
            "write_attempts": 2,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.02,
        }
        values.update(options)
        return Publisher(self.campaign.pool, self.zone, self.platform, self.status, options=FileOptions(**values))

    async def publish(self, batches: Sequence[AudienceExportBatch], publisher: Publisher | None = None) -> None:
        rejected = await (publisher or self.publisher()).handle([delivery(b, n) for n, b in enumerate(batches)])
        assert rejected == []

    async def run(self, run_id: uuid.UUID) -> dict[str, Any]:
        row = await self.campaign.pool.fetchrow("SELECT * FROM run WHERE run_id = $1", run_id)
        assert row is not None
        return {**dict(row), "counts": orjson.loads(row["counts"])}

    async def file_ts(self, run_id: uuid.UUID) -> int:
        """The timestamp of the run's file names (its start, moved on when another run of the DPID has it)."""
        return int(await self.campaign.pool.fetchval("SELECT file_ts FROM publish_run WHERE run_id = $1", run_id))

    async def members(self, audience_id: str) -> set[str]:
        rows = await self.campaign.pool.fetch("SELECT id FROM exported_member WHERE audience_id = $1", audience_id)
        return {r["id"] for r in rows}

    async def audience(self, audience_id: str) -> dict[str, Any]:
        row = await self.campaign.pool.fetchrow("SELECT * FROM shared_audience WHERE audience_id = $1", audience_id)
        assert row is not None
        return dict(row)

    async def statuses(self, expect: int) -> list[AudienceSyncStatus]:
        records = await read_topic(self.bootstrap, self.status_topic, expect=expect, timeout=10)
        return [AudienceSyncStatus.model_validate_json(r.value) for r in records]


@pytest_asyncio.fixture
async def rig(
    campaign: Campaign,
    ecsim: EcsimEndpoint,  # noqa: F811
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    await ecsim.seed(PLATFORM_SEED)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    status_topic = f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [status_topic])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    platform = PlatformClient(ecsim.platform_settings(platform_max_attempts=3))
    root = tmp_path / "export"
    zone = FaultyDropZone(FileDropZone(root), ZoneFault())
    yield Rig(
        campaign=campaign,
        ecsim=ecsim,
        root=root,
        zone=zone,
        platform=platform,
        status=RunReporter(producer, service="publish", topic_prefix=topic_prefix),
        producer=producer,
        topic_prefix=topic_prefix,
        bootstrap=kafka_bootstrap,
        status_topic=status_topic,
    )
    await platform.close()
    await producer.stop()


async def test_a_run_becomes_a_shared_audience_and_sync_files(rig: Rig) -> None:
    adds = [ecid_of(i) for i in range(1, 121)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-vip", data_source="visitors", mode="mirror")
    started = (await rig.run(run_id))["started_at"]
    await rig.publish(export_batches(run_id, "ab-vip", adds=adds, mode="mirror", excluded=3))

    run = await rig.run(run_id)
    assert run["state"] == "succeeded"
    assert run["finished_at"] is not None
    assert {k: run["counts"][k] for k in ("received", "added", "removed", "excluded")} == {
        "received": 123,
        "added": 120,
        "removed": 0,
        "excluded": 3,
    }
    assert await rig.members("ab-vip") == set(adds)
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM publish_stage_batch") == 0

    # The platform holds the audience: an onboarded trait and a one-trait segment, found by integration code.
    audience = await rig.audience("ab-vip")
    trait = await rig.platform.get_trait_by_integration_code("ab-vip")
    segment = await rig.platform.get_segment_by_integration_code("ab-vip")
    assert (trait.sid, segment.sid) == (audience["platform_trait_id"], audience["platform_segment_id"])
    assert trait.trait_type == "ON_BOARDED_TRAIT"
    assert trait.data_source_id == segment.data_source_id == 1001
    assert trait.name == segment.name == "Audience ab-vip"
    assert segment.segment_rule == f"{trait.sid}T"

    ts = int(started.timestamp())
    day = datetime.fromtimestamp(ts, UTC).date().isoformat()
    files = read_files(rig.root)
    assert list(files) == [f"{PARTNER}/date={day}/ftp_dpm_1001_{ts}.sync.gz"]
    (records,) = files.values()
    assert sorted(r.user_id for r in records) == sorted(adds)
    assert {(r.adds, r.removes) for r in records} == {((trait.sid,), ())}
    recorded = await rig.campaign.pool.fetch("SELECT name, lines FROM published_file WHERE run_id = $1", run_id)
    assert [(r["name"], r["lines"]) for r in recorded] == [(next(iter(files)), 120)]

    events = await rig.statuses(2)
    assert [(e.state, e.direction, e.audience_id, e.service) for e in events] == [
        ("started", "export", "ab-vip", "publish"),
        ("succeeded", "export", "ab-vip", "publish"),
    ]
    assert events[1].counts.added == 120
    assert events[1].counts.excluded == 3

    # Next run (mirror): 20 left the list, 10 joined. Removals only name IDs exported before.
    second = await add_export_run(rig.campaign.pool, audience_id="ab-vip", data_source="visitors", mode="mirror")
    joined = [ecid_of(i) for i in range(121, 131)]
    await rig.publish(export_batches(second, "ab-vip", adds=joined, removes=adds[:20], mode="mirror", size=7))
    assert (await rig.run(second))["state"] == "succeeded"
    assert await rig.members("ab-vip") == set(adds[20:]) | set(joined)
    assert await rig.platform.list_traits(data_source_ids=[1001]) == [trait]  # reused, not created again
    new_files = {k: v for k, v in read_files(rig.root).items() if k not in files}
    (records,) = new_files.values()
    assert {r.user_id for r in records if r.adds == (trait.sid,)} == set(joined)
    assert {r.user_id for r in records if r.removes == (trait.sid,)} == set(adds[:20])


async def test_redelivered_batches_change_nothing(rig: Rig) -> None:
    adds = [hashed_email_of(i) for i in range(1, 61)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-emails", data_source="hashed-emails")
    batches = export_batches(run_id, "ab-emails", adds=adds, data_source="hashed-emails", dpid=1002, size=20)
    publisher = rig.publisher()
    await rig.publish([batches[0], batches[0], batches[1]], publisher)
    assert (
        await rig.campaign.pool.fetchval(
            "SELECT sum(adds_n + removes_n) FROM publish_stage_batch WHERE run_id = $1", run_id
        )
        == 40
    )
    await rig.publish([batches[1], batches[2]], publisher)
    assert (await rig.run(run_id))["state"] == "succeeded"
    files = {p: p.stat().st_mtime_ns for p in rig.root.rglob("*") if p.is_file()}
    assert len(files) == 1

    # The whole run again, after it succeeded: no new file, no rewrite, members unchanged, state re-said.
    await rig.publish(batches, publisher)
    assert {p: p.stat().st_mtime_ns for p in rig.root.rglob("*") if p.is_file()} == files
    assert await rig.members("ab-emails") == set(adds)
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM published_batch WHERE run_id = $1", run_id) == 3
    events = await rig.statuses(3)
    assert [e.state for e in events] == ["started", "succeeded", "succeeded"]
    # Declared IDs travel hashed: no raw e-mail in any file.
    content = b"".join(gzip.decompress(p.read_bytes()) for p in files)
    assert b"@" not in content
    assert email_of(1).strip().lower().encode() not in content.lower()


async def test_full_runs_overwrite_with_every_exported_trait_and_remove_leavers(rig: Rig) -> None:
    pool = rig.campaign.pool
    # Another export audience of the same data source already holds users 1..30.
    other = await add_export_run(pool, audience_id="ab-other", data_source="visitors", mode="append")
    await rig.publish(export_batches(other, "ab-other", adds=[ecid_of(i) for i in range(1, 31)]))
    other_trait = (await rig.audience("ab-other"))["platform_trait_id"]

    first = await add_export_run(pool, audience_id="ab-full", data_source="visitors", mode="full")
    await rig.publish(export_batches(first, "ab-full", adds=[ecid_of(i) for i in range(21, 61)], mode="full"))
    trait = (await rig.audience("ab-full"))["platform_trait_id"]
    assert other_trait != trait
    # Users 41..60 leave; 61..70 join.
    second = await add_export_run(pool, audience_id="ab-full", data_source="visitors", mode="full")
    current = [ecid_of(i) for i in range(21, 41)] + [ecid_of(i) for i in range(61, 71)]
    leavers = [ecid_of(i) for i in range(41, 61)]
    await rig.publish(export_batches(second, "ab-full", adds=current, removes=leavers, mode="full", size=9))
    assert (await rig.run(second))["state"] == "succeeded"
    assert await rig.members("ab-full") == set(current)
    ts = await rig.file_ts(second)
    assert ts >= int((await rig.run(second))["started_at"].timestamp())

    names = {k.rsplit("/", 1)[-1]: v for k, v in read_files(rig.root).items()}
    overwrite = {r.user_id: r.adds for r in names[f"ftp_dpm_1001_{ts}.overwrite.gz"]}
    assert set(overwrite) == set(current)
    both = tuple(sorted((trait, other_trait)))
    assert {u for u, traits in overwrite.items() if traits == both} == {ecid_of(i) for i in range(21, 31)}
    assert {u for u, traits in overwrite.items() if traits == (trait,)} == set(current) - {
        ecid_of(i) for i in range(21, 31)
    }
    removal = names[f"ftp_dpm_1001_{ts}.sync.gz"]
    assert {r.user_id for r in removal} == set(leavers)
    assert {(r.adds, r.removes) for r in removal} == {((), (trait,))}


async def test_large_runs_are_split_into_parts_below_the_limit(rig: Rig) -> None:
    adds = [ecid_of(i) for i in range(1, 401)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-big", data_source="visitors")
    await rig.publish(export_batches(run_id, "ab-big", adds=adds, size=100), rig.publisher(max_part_bytes=4096))
    ts = await rig.file_ts(run_id)
    paths = sorted(rig.root.rglob("ftp_dpm_*"), key=lambda p: p.name)
    # 400 lines of 52 bytes (38-digit ECID, TAB, d_sid=<6-digit trait>, LF), 78 per 4 KiB part: 6 parts.
    assert len(f"{ecid_of(1)}\td_sid={(await rig.audience('ab-big'))['platform_trait_id']}\n") == 52
    assert [p.name for p in paths] == [f"ftp_dpm_1001_{ts}.sync.{n}.gz" for n in range(1, 7)]
    for path in paths:
        assert len(gzip.decompress(path.read_bytes())) <= 4096
    assert sorted(r.user_id for records in read_files(rig.root).values() for r in records) == sorted(adds)


async def test_two_runs_of_one_data_source_in_the_same_second_get_distinct_names(rig: Rig) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    first = await add_export_run(rig.campaign.pool, audience_id="ab-a", data_source="visitors", started_at=at)
    second = await add_export_run(rig.campaign.pool, audience_id="ab-b", data_source="visitors", started_at=at)
    await rig.publish(export_batches(first, "ab-a", adds=[ecid_of(1)]))
    await rig.publish(export_batches(second, "ab-b", adds=[ecid_of(2)]))
    ts = int(at.timestamp())
    assert sorted(p.name for p in rig.root.rglob("ftp_dpm_*")) == [
        f"ftp_dpm_1001_{ts}.sync.gz",
        f"ftp_dpm_1001_{ts + 1}.sync.gz",
    ]


async def test_a_batch_of_an_unknown_run_is_dead_lettered_with_a_failed_status(rig: Rig) -> None:
    (batch,) = export_batches(uuid.uuid4(), "ab-ghost", adds=[ecid_of(1)])
    rejected = await rig.publisher().handle([delivery(batch)])
    assert [r.delivery.message for r in rejected] == [batch]
    (event,) = await rig.statuses(1)
    assert event.state == "failed"
    assert event.run_id == batch.run_id
    assert event.reason is not None
    assert "no export run" in event.reason
    assert list(rig.root.rglob("*")) == []


async def test_a_platform_outage_fails_the_run_and_retry_run_finishes_it(rig: Rig) -> None:
    adds = [ecid_of(i) for i in range(1, 51)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-down", data_source="visitors")
    await rig.ecsim.set_faults(rate=1.0, statuses=[503], retry_after_s=0)
    await rig.publish(export_batches(run_id, "ab-down", adds=adds, size=20))

    run = await rig.run(run_id)
    assert run["state"] == "failed"
    assert "creating the shared audience" in run["reason"]
    assert "503" in run["reason"]
    assert rig.ecsim.client_secret not in run["reason"]
    assert "Bearer" not in run["reason"]
    assert (
        await rig.campaign.pool.fetchval(
            "SELECT sum(adds_n + removes_n) FROM publish_stage_batch WHERE run_id = $1", run_id
        )
        == 50
    )
    assert await rig.members("ab-down") == set()
    assert list(rig.root.rglob("ftp_dpm_*")) == []
    events = await rig.statuses(2)
    assert [e.state for e in events] == ["started", "failed"]
    assert events[1].reason == run["reason"]

    await rig.ecsim.clear_faults()
    outcome = await retry_run(
        rig.campaign.pool, rig.zone, rig.platform, rig.status, run_id, options=FileOptions(partner=PARTNER)
    )
    assert outcome.state == "succeeded"
    assert outcome.counts["added"] == 50
    assert len(outcome.files) == 1
    run = await rig.run(run_id)
    assert run["state"] == "succeeded"
    assert run["reason"] is None
    assert await rig.members("ab-down") == set(adds)
    # Retrying a run that succeeded changes nothing.
    again = await retry_run(rig.campaign.pool, rig.zone, rig.platform, rig.status, run_id)
    assert again.state == "succeeded"
    assert len(list(rig.root.rglob("ftp_dpm_*"))) == 1


async def test_an_unavailable_drop_zone_fails_the_run_until_retried(rig: Rig) -> None:
    adds = [ecid_of(i) for i in range(1, 31)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-zone", data_source="visitors")
    rig.zone.fault.set(60)
    await rig.publish(export_batches(run_id, "ab-zone", adds=adds))
    run = await rig.run(run_id)
    assert run["state"] == "failed"
    assert "writing the inbound data files" in run["reason"]
    assert (await rig.audience("ab-zone"))["platform_trait_id"] is not None  # the audience exists already

    rig.zone.fault.clear()
    outcome = await retry_run(
        rig.campaign.pool, rig.zone, rig.platform, rig.status, run_id, options=FileOptions(partner=PARTNER)
    )
    assert outcome.state == "succeeded"
    assert await rig.members("ab-zone") == set(adds)


async def test_retry_run_refuses_unknown_incomplete_and_superseded_runs(rig: Rig) -> None:
    pool = rig.campaign.pool
    with pytest.raises(RunNotRetryable, match="no export run"):
        await retry_run(pool, rig.zone, rig.platform, rig.status, uuid.uuid4())

    old = await add_export_run(pool, audience_id="ab-r", data_source="visitors", mode="mirror")
    batches = export_batches(old, "ab-r", adds=[ecid_of(i) for i in range(1, 11)], size=5, mode="mirror")
    await rig.ecsim.set_faults(rate=1.0, statuses=[500], retry_after_s=0)
    await rig.publish(batches[:1])
    assert (await rig.run(old))["state"] == "failed"
    with pytest.raises(RunNotRetryable, match="not all staged"):
        await retry_run(pool, rig.zone, rig.platform, rig.status, old)
    await rig.publish(batches[1:])
    assert (await rig.run(old))["state"] == "failed"  # a failed run waits for retry_run or a new request

    await rig.ecsim.clear_faults()
    newer = await add_export_run(pool, audience_id="ab-r", data_source="visitors", mode="mirror")
    await rig.publish(export_batches(newer, "ab-r", adds=[ecid_of(i) for i in range(1, 8)], mode="mirror"))
    assert (await rig.run(newer))["state"] == "succeeded"
    # The newer run superseded the failed one: its staging is gone and it cannot be replayed over it.
    assert await pool.fetchval("SELECT count(*) FROM publish_stage_batch WHERE run_id = $1", old) == 0
    with pytest.raises(RunNotRetryable, match="newer run"):
        await retry_run(pool, rig.zone, rig.platform, rig.status, old)


class _FailingMidWrite(FileDropZone):
    """A real file zone whose first upload breaks after its first chunk, like a connection lost mid-PUT."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.broken = 0

    async def write(self, name: str, data: bytes | AsyncIterable[bytes]) -> ObjectInfo:
        if self.broken == 0 and not isinstance(data, bytes):
            self.broken += 1
            async for _chunk in data:
                raise DropZoneUnavailable("connection lost mid-upload (test)", name=name)
        return await super().write(name, data)


async def test_an_upload_broken_mid_part_is_written_again_whole(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small fetches so a part is many chunks and the failure lands with the next rows in flight.
    monkeypatch.setattr("services.publish.file_set_rows.FETCH_ROWS", 25)
    zone = _FailingMidWrite(rig.root)
    adds = [ecid_of(i) for i in range(1, 201)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-mid", data_source="visitors")
    publisher = Publisher(
        rig.campaign.pool,
        zone,
        rig.platform,
        rig.status,
        options=FileOptions(partner=PARTNER, gzip=False, max_part_bytes=4096, backoff_initial_s=0.01),
    )
    await rig.publish(export_batches(run_id, "ab-mid", adds=adds, size=100), publisher)
    assert zone.broken == 1
    assert (await rig.run(run_id))["state"] == "succeeded"
    files = read_files(rig.root)
    assert len(files) == 3
    assert sorted(r.user_id for records in files.values() for r in records) == sorted(adds)
    assert not [p for p in rig.root.rglob("*") if p.is_file() and not p.name.startswith("ftp_dpm_")]


async def test_a_succeeded_run_is_never_failed_and_is_counted_once(rig: Rig) -> None:
    # Wired as the service wires it: ab_export_runs_total fed from where ab_runs_total counts.
    registry = CollectorRegistry()
    metrics = PrometheusPublishMetrics(registry)
    reporter = RunReporter(
        rig.producer,
        service="publish",
        topic_prefix=rig.topic_prefix,
        registry=registry,
        ends=(("export", "succeeded"), ("export", "failed")),
        on_counted=lambda run: metrics.run_reported(run.state),
    )
    publisher = Publisher(
        rig.campaign.pool, rig.zone, rig.platform, reporter, options=FileOptions(partner=PARTNER), metrics=metrics
    )
    adds = [ecid_of(i) for i in range(1, 21)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-once", data_source="visitors")
    batches = export_batches(run_id, "ab-once", adds=adds, size=10)
    await rig.publish(batches, publisher)
    before = await rig.run(run_id)
    assert before["state"] == "succeeded"

    # The lifecycle refuses to fail it, in the store ...
    async with rig.campaign.pool.acquire() as conn, conn.transaction():
        with pytest.raises(IllegalTransition):
            await store.move(conn, run_id, "failed", reason="late failure (test)")
    # ... and on the publisher's fail path (a replica whose write failed after another one finished the
    # run): the run keeps its state, reason and finish time, and nothing is announced.
    run = await load_run(rig.campaign.pool, run_id)
    assert run is not None
    outcome = await publisher._fail(run, STEP_FILES, RuntimeError("zone lost (test)"))
    assert (outcome.state, outcome.reason) == ("succeeded", None)
    after = await rig.run(run_id)
    assert {k: after[k] for k in ("state", "reason", "finished_at")} == {
        k: before[k] for k in ("state", "reason", "finished_at")
    }

    # A redelivered run says again how it ended, but is still one succeeded run in both metrics.
    await rig.publish(batches, publisher)
    assert [e.state for e in await rig.statuses(3)] == ["started", "succeeded", "succeeded"]

    def sample(name: str, **labels: str) -> float | None:
        value: float | None = registry.get_sample_value(name, labels)
        return value

    assert sample("ab_runs_total", direction="export", state="succeeded") == 1
    assert sample("ab_export_runs_total", state="succeeded") == 1
    assert sample("ab_export_runs_total", state="started") == 1
    assert sample("ab_runs_total", direction="export", state="failed") == 0
    assert sample("ab_export_runs_total", state="failed") is None
