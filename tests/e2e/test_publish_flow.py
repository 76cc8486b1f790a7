"""Export publishing end to end: export batches on Kafka -> publish (a real process) -> ecsim and the drop zone.

Runs, audiences and data sources are recorded as reconcile records them before emitting batches; the
batches are produced to the real broker; publish runs as a subprocess against a fresh database and a
dedicated ecsim whose export drop zone is this test's folder. The first tests look at the files publish
uploads (``EXPORT_AWAIT_RECEIPTS=false``: a run ends when its files are up, and ecsim processes them when
the test says so); the last ones let the platform decide: ecsim processes files by itself, with the
delays and rejections it is told to make, and publish ends each run by the receipts.
"""

from __future__ import annotations

import gzip
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from services.publish.files import FileOptions
from services.publish.publisher import retry_run
from shared.dropzone import FileDropZone
from shared.formats.inbound import InboundParser, InboundRecord
from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.messages import AudienceExportBatch, AudienceSyncStatus
from shared.metrics import RuntimeMetrics
from shared.platform import InboundReceipt, PlatformClient
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_export_run, ecid_of, email_of, hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint, EcsimFactory, ecsim_factory  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401
from tests.helpers import eventually, read_topic
from tests.integration.test_publish_runs import PLATFORM_SEED, export_batches

pytestmark = pytest.mark.e2e

PARTNER = "acme"
PART_BYTES = 4096


@dataclass
class PublishStack:
    campaign: Campaign
    ecsim: EcsimEndpoint
    root: Path
    producer: Producer
    env: dict[str, str]
    start_service: StartService
    publish: ServiceProcess
    topic_prefix: str
    bootstrap: str

    async def produce(self, batches: Sequence[AudienceExportBatch]) -> None:
        topic = f"{self.topic_prefix}audience-export-batches"
        await self.producer.send([OutgoingMessage.of(topic, b) for b in batches])

    async def state(self, run_id: uuid.UUID) -> str | None:
        value = await self.campaign.pool.fetchval("SELECT state FROM run WHERE run_id = $1", run_id)
        return None if value is None else str(value)

    async def wait_state(self, run_id: uuid.UUID, state: str, timeout: float = 30) -> None:
        ended = await eventually(
            lambda: self.state(run_id), until=lambda s: s in ("succeeded", "failed"), timeout=timeout, interval=0.05
        )
        if ended != state:
            reason = await self.campaign.pool.fetchval("SELECT reason FROM run WHERE run_id = $1", run_id)
            raise AssertionError(f"run {run_id} ended {ended}, not {state}: {reason}")

    async def members(self, audience_id: str) -> set[str]:
        rows = await self.campaign.pool.fetch("SELECT id FROM exported_member WHERE audience_id = $1", audience_id)
        return {r["id"] for r in rows}

    async def trait(self, audience_id: str) -> int:
        sid = await self.campaign.pool.fetchval(
            "SELECT platform_trait_id FROM shared_audience WHERE audience_id = $1", audience_id
        )
        assert sid is not None
        return int(sid)

    async def recorded(self, run_id: uuid.UUID) -> list[str]:
        rows = await self.campaign.pool.fetch("SELECT name FROM published_file WHERE run_id = $1", run_id)
        return sorted(r["name"] for r in rows)

    def files(self) -> dict[str, list[InboundRecord]]:
        """Inbound files in the zone by key (ecsim's processed/ area included, under their original key)."""
        out: dict[str, list[InboundRecord]] = {}
        for path in sorted(self.root.rglob("ftp_dpm_*")):
            if path.name.endswith(".reason.txt"):
                continue
            key = path.relative_to(self.root).as_posix()
            key = key.split("/", 1)[1] if key.startswith(("processed/", "rejected/")) else key
            assert key not in out, f"the same file twice in the zone: {key}"
            parser = InboundParser(path.name)
            items = list(parser.parse([path.read_bytes()]))
            assert parser.counters.format_errors == 0, items
            out[key] = [r for r in items if isinstance(r, InboundRecord)]
        return out

    async def platform_processes(self) -> list[dict[str, Any]]:
        """ecsim processes every file now in the export zone; its receipts, each checked clean."""
        receipts: list[dict[str, Any]] = (await self.ecsim.admin("POST", "/inbound/scan"))["files"]
        for receipt in receipts:
            assert receipt["status"] == "processed", receipt
            assert (receipt["formatErrors"], receipt["invalidAamIds"], receipt["noTraitRealized"]) == (0, 0, 0)
        return receipts

    async def trait_members(self, sid: int) -> set[str]:
        """Who holds the trait in ecsim's profile store."""
        body = await self.ecsim.admin("GET", f"/traits/{sid}/members?ids=true&pageSize=100000")
        return set(body["ids"])

    async def receipts(self, dpid: int) -> dict[str, InboundReceipt]:
        """The data source's processing receipts, as the platform's REST API shows them."""
        async with PlatformClient(self.ecsim.platform_settings()) as platform:
            return {r.data_file_name or "": r for r in await platform.inbound_history(dpid)}

    async def statuses(self, expect: int) -> list[AudienceSyncStatus]:
        records = await read_topic(self.bootstrap, f"{self.topic_prefix}audience-sync-status", expect=expect)
        return [AudienceSyncStatus.model_validate_json(r.value) for r in records]


@pytest_asyncio.fixture
async def stack(
    campaign: Campaign,
    ecsim_factory: EcsimFactory,  # noqa: F811
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> AsyncIterator[PublishStack]:
    root = tmp_path / "export"
    ecsim = await ecsim_factory(ECSIM_EXPORT_DROPZONE_URL=root.as_uri(), ECSIM_INBOUND_POLL_INTERVAL_S="0")
    await ecsim.seed(PLATFORM_SEED)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}audience-export-batches", f"{topic_prefix}audience-sync-status"])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "EXPORT_DROPZONE_URL": root.as_uri(),
        "EXPORT_PARTNER_FOLDER": PARTNER,
        "EXPORT_MAX_PART_BYTES": str(PART_BYTES),
        "PLATFORM_IMS_URL": ecsim.ims_url,
        "PLATFORM_API_URL": ecsim.api_url,
        "PLATFORM_BACKOFF_INITIAL_S": "0.01",
        "PLATFORM_BACKOFF_MAX_S": "0.05",
        "PLATFORM_RETRY_AFTER_MAX_S": "0.1",
        "RETRY_BACKOFF_INITIAL_S": "0.05",
        "RETRY_BACKOFF_MAX_S": "0.5",
        "KAFKA_MAX_POLL_RECORDS": "10",
        "EXPORT_AWAIT_RECEIPTS": "false",  # the former behaviour: these tests look at the files themselves
    }
    publish = await start_service("publish", env=env)
    yield PublishStack(
        campaign=campaign,
        ecsim=ecsim,
        root=root,
        producer=producer,
        env=env,
        start_service=start_service,
        publish=publish,
        topic_prefix=topic_prefix,
        bootstrap=kafka_bootstrap,
    )
    await producer.stop()


def _ids(files: dict[str, list[InboundRecord]]) -> Counter[tuple[str, str, int]]:
    """(op, user id, trait) over every line of every file: a count above 1 is a duplicate."""
    seen: Counter[tuple[str, str, int]] = Counter()
    for records in files.values():
        for r in records:
            seen.update(("add", r.user_id, t) for t in r.adds)
            seen.update(("remove", r.user_id, t) for t in r.removes)
    return seen


async def test_declared_and_visitor_id_audiences_with_redelivery_and_platform_faults(stack: PublishStack) -> None:
    pool = stack.campaign.pool
    emails = [hashed_email_of(i) for i in range(1, 151)]
    by_email = await add_export_run(pool, audience_id="ab-emails", data_source="hashed-emails", mode="append")
    visitors = [ecid_of(i) for i in range(1, 81)] + [ecid_of(2, 1)]
    by_ecid = await add_export_run(pool, audience_id="ab-visitors", data_source="visitors", mode="mirror")
    email_batches = export_batches(
        by_email, "ab-emails", adds=emails, data_source="hashed-emails", dpid=1002, size=40, excluded=5
    )
    visitor_batches = export_batches(by_ecid, "ab-visitors", adds=visitors, mode="mirror", size=30)
    # Every batch twice, as after a crash of the producer or a redelivery: nothing may change.
    await stack.produce(email_batches + visitor_batches)
    await stack.produce(email_batches + visitor_batches)
    await stack.wait_state(by_email, "succeeded")
    await stack.wait_state(by_ecid, "succeeded")
    assert await stack.members("ab-emails") == set(emails)
    assert await stack.members("ab-visitors") == set(visitors)

    files = stack.files()
    email_trait, visitor_trait = await stack.trait("ab-emails"), await stack.trait("ab-visitors")
    assert sorted(files) == sorted([*await stack.recorded(by_email), *await stack.recorded(by_ecid)])
    email_files = [k for k in files if "/ftp_dpm_1002_" in k]
    assert len(email_files) >= 3  # 150 lines of ~78 bytes in 4 KiB parts
    assert all(k.startswith(f"{PARTNER}/date=") and k.endswith(".gz") for k in files)
    assert all(k.rsplit(".", 2)[-2].isdigit() for k in email_files)  # numbered parts
    assert _ids(files) == Counter(
        [("add", i, email_trait) for i in emails] + [("add", i, visitor_trait) for i in visitors]
    )
    content = b"".join(gzip.decompress(p.read_bytes()) for p in stack.root.rglob("ftp_dpm_*"))
    assert b"@" not in content
    assert email_of(1).strip().lower().encode() not in content.lower()

    # The platform applies them: its profile store holds exactly the audiences' IDs in their traits.
    processed = await stack.platform_processes()
    assert sorted(r["objectKey"] for r in processed) == sorted(files)
    assert await stack.trait_members(email_trait) == set(emails)
    assert await stack.trait_members(visitor_trait) == set(visitors)
    receipts = await stack.receipts(1002)
    assert sorted(receipts) == sorted(k.rsplit("/", 1)[-1] for k in email_files)
    assert {(r.format_errors, r.success) for r in receipts.values()} == {(0, True)}
    assert sum(r.records_received or 0 for r in receipts.values()) == len(emails)

    # The next mirror run: 10 visitors left the list, 5 joined. The platform drops exactly those 10.
    mirror = await add_export_run(pool, audience_id="ab-visitors", data_source="visitors", mode="mirror")
    joined = [ecid_of(i) for i in range(91, 96)]
    await stack.produce(export_batches(mirror, "ab-visitors", adds=joined, removes=visitors[:10], mode="mirror"))
    await stack.wait_state(mirror, "succeeded")
    visitors = [*visitors[10:], *joined]
    assert await stack.members("ab-visitors") == set(visitors)
    await stack.platform_processes()
    assert await stack.trait_members(visitor_trait) == set(visitors)
    files = stack.files()

    # A full export of a new audience of the visitors while ecsim fails a share of calls and every token
    # expires: it still completes, once. Its overwrite lines also carry the other audience's trait for the
    # users that one holds, since an overwrite replaces all of a user's traits in the data source.
    await stack.ecsim.set_faults(rate=0.3, statuses=[429, 500, 503], retry_after_s=0, seed=3)
    assert await stack.ecsim.expire_tokens() >= 1
    full = await add_export_run(pool, audience_id="ab-visitors-full", data_source="visitors", mode="full")
    current = [*visitors[20:], *(ecid_of(i) for i in range(81, 91))]
    await stack.produce(export_batches(full, "ab-visitors-full", adds=current, mode="full", size=25))
    await stack.wait_state(full, "succeeded")
    assert (await stack.ecsim.state())["faults"]["injected"] > 0
    await stack.ecsim.clear_faults()
    assert await stack.members("ab-visitors-full") == set(current)
    new = {k: v for k, v in stack.files().items() if k not in files}
    assert sorted(new) == await stack.recorded(full)
    assert new
    assert all(".overwrite." in k for k in new)
    full_trait = await stack.trait("ab-visitors-full")
    lines = {r.user_id: r.adds for records in new.values() for r in records}
    assert lines == {
        **{i: tuple(sorted((visitor_trait, full_trait))) for i in visitors[20:]},
        **{ecid_of(i): (full_trait,) for i in range(81, 91)},
    }
    assert sum(len(records) for records in new.values()) == len(current)
    await stack.platform_processes()
    assert await stack.trait_members(full_trait) == set(current)
    assert await stack.trait_members(visitor_trait) == set(visitors)  # the overwrite kept the other trait

    events = await stack.statuses(10)
    by_run: dict[uuid.UUID, list[str]] = {}
    for e in events:
        by_run.setdefault(e.run_id, []).append(e.state)
    # The redelivered last batches of the first two runs re-say how they ended; nothing else happens.
    assert by_run == {
        by_email: ["started", "succeeded", "succeeded"],
        by_ecid: ["started", "succeeded", "succeeded"],
        mirror: ["started", "succeeded"],
        full: ["started", "succeeded"],
    }
    final = next(e for e in events if e.run_id == by_email and e.state == "succeeded")
    assert (final.counts.received, final.counts.added, final.counts.excluded) == (155, 150, 5)
    final = next(e for e in events if e.run_id == mirror and e.state == "succeeded")
    assert (final.counts.added, final.counts.removed) == (5, 10)

    status, metrics = await stack.publish.get("/metrics")
    assert status == 200
    assert 'ab_export_ids_sent_total{op="remove"} 10.0' in metrics
    assert 'ab_export_runs_total{state="succeeded"}' in metrics
    assert "ab_export_files_written_total" in metrics
    assert "ab_platform_calls_total" in metrics


async def test_publish_killed_mid_run_and_restarted_publishes_exactly_once(stack: PublishStack) -> None:
    """SIGKILL while batches are being staged, then again while the run's files are being written."""
    await stack.publish.stop()
    # ~600 small parts: a long write to land in. After each SIGKILL the group waits for the killed process as long
    # as its session timeout before the restarted one gets the partitions: the broker's minimum, not 10 s.
    env = {**stack.env, "EXPORT_MAX_PART_BYTES": "1024", "KAFKA_SESSION_TIMEOUT_S": "6"}
    publish = await stack.start_service("publish", env=env)
    pool = stack.campaign.pool
    ids = [f"{i:038d}" for i in range(1, 12_001)]
    run_id = await add_export_run(pool, audience_id="ab-kill", data_source="visitors", mode="append")
    batches = export_batches(run_id, "ab-kill", adds=ids, size=100)

    async def count(table: str) -> int:
        return int(await pool.fetchval(f"SELECT count(*) FROM {table} WHERE run_id = $1", run_id))

    await stack.produce(batches)
    await eventually(lambda: count("published_batch"), until=lambda n: n >= 10, timeout=30, interval=0.02)
    await publish.kill()
    assert await count("published_batch") < len(batches), "the run was staged before the kill: make it bigger"

    publish = await stack.start_service("publish", env=env)
    await eventually(lambda: count("published_file"), until=lambda n: n >= 20, timeout=60, interval=0.02)
    await publish.kill()
    assert await stack.state(run_id) == "progress", "the run finished before the kill: make it bigger"

    await stack.start_service("publish", env=env)
    await stack.wait_state(run_id, "succeeded", timeout=60)
    assert await count("published_batch") == len(batches)
    assert await stack.members("ab-kill") == set(ids)
    files = stack.files()
    assert sorted(files) == await stack.recorded(run_id)
    trait = await stack.trait("ab-kill")
    assert _ids(files) == Counter(("add", i, trait) for i in ids)  # every ID once: no part written twice
    processed = await stack.platform_processes()
    assert len(processed) == len(files)
    assert await stack.trait_members(trait) == set(ids)
    assert await pool.fetchval("SELECT count(*) FROM publish_stage_batch") == 0


async def test_a_run_failing_on_the_platform_is_failed_then_retried(stack: PublishStack) -> None:
    await stack.publish.stop()
    publish = await stack.start_service("publish", env={**stack.env, "PLATFORM_MAX_ATTEMPTS": "2"})
    pool = stack.campaign.pool
    ids = [ecid_of(i) for i in range(1, 41)]
    run_id = await add_export_run(pool, audience_id="ab-fail", data_source="visitors", mode="append")
    await stack.ecsim.set_faults(rate=1.0, statuses=[500], retry_after_s=0)
    await stack.produce(export_batches(run_id, "ab-fail", adds=ids, size=15))
    await stack.wait_state(run_id, "failed")
    reason = await pool.fetchval("SELECT reason FROM run WHERE run_id = $1", run_id)
    assert "500" in reason
    assert stack.ecsim.client_secret not in reason
    await eventually(
        lambda: pool.fetchval("SELECT count(*) FROM published_batch WHERE run_id = $1", run_id),
        until=lambda n: n == 3,
    )
    assert await stack.members("ab-fail") == set()
    assert (await publish.get("/readyz"))[0] == 200  # the partition moved on; the service is fine

    await stack.ecsim.clear_faults()
    outcome = await _retry(stack, run_id)
    assert outcome["state"] == "succeeded"
    assert await stack.state(run_id) == "succeeded"
    assert await stack.members("ab-fail") == set(ids)
    trait = await stack.trait("ab-fail")
    assert _ids(stack.files()) == Counter(("add", i, trait) for i in ids)
    await stack.platform_processes()
    assert await stack.trait_members(trait) == set(ids)


async def _retry(stack: PublishStack, run_id: uuid.UUID) -> dict[str, Any]:
    """What `audience-bridge retry RUN` does, in this process."""
    settings = KafkaSettings(kafka_bootstrap_servers=stack.bootstrap, topic_prefix=stack.topic_prefix)
    producer = Producer(settings, "cli", RuntimeMetrics("cli"))
    await producer.start()
    try:
        async with PlatformClient(stack.ecsim.platform_settings()) as platform, FileDropZone(stack.root) as zone:
            outcome = await retry_run(
                stack.campaign.pool,
                zone,
                platform,
                RunReporter(producer, service="cli", topic_prefix=stack.topic_prefix),
                run_id,
                options=FileOptions(partner=PARTNER, max_part_bytes=PART_BYTES),
            )
    finally:
        await producer.stop()
    return {"state": outcome.state, "counts": outcome.counts, "files": outcome.files}


# --- the platform decides ----------------------------------------------------------------------------------

RECEIPT_TIMEOUT_S = 3.0


@pytest_asyncio.fixture
async def platform_stack(
    campaign: Campaign,
    ecsim_factory: EcsimFactory,  # noqa: F811
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> AsyncIterator[PublishStack]:
    """publish awaiting receipts; ecsim processing its export zone by itself every 0.2 s, without delay."""
    root = tmp_path / "export"
    ecsim = await ecsim_factory(
        ECSIM_EXPORT_DROPZONE_URL=root.as_uri(), ECSIM_INBOUND_POLL_INTERVAL_S="0.2", ECSIM_INBOUND_DELAY_S="0"
    )
    await ecsim.seed(PLATFORM_SEED)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}audience-export-batches", f"{topic_prefix}audience-sync-status"])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "EXPORT_DROPZONE_URL": root.as_uri(),
        "EXPORT_PARTNER_FOLDER": PARTNER,
        "PLATFORM_IMS_URL": ecsim.ims_url,
        "PLATFORM_API_URL": ecsim.api_url,
        "RETRY_BACKOFF_INITIAL_S": "0.05",
        "RETRY_BACKOFF_MAX_S": "0.5",
        "EXPORT_RECEIPT_POLL_S": "0.1",
        "EXPORT_RECEIPT_POLL_MAX_S": "0.5",
        "EXPORT_RECEIPT_TIMEOUT_S": str(RECEIPT_TIMEOUT_S),
    }
    publish = await start_service("publish", env=env)
    yield PublishStack(
        campaign=campaign,
        ecsim=ecsim,
        root=root,
        producer=producer,
        env=env,
        start_service=start_service,
        publish=publish,
        topic_prefix=topic_prefix,
        bootstrap=kafka_bootstrap,
    )
    await producer.stop()


async def _ended(stack: PublishStack, run_id: uuid.UUID, timeout: float = 30) -> dict[str, Any]:
    """The run once it left ``uploaded`` (and the live states before it)."""
    await eventually(
        lambda: stack.state(run_id),
        until=lambda s: s in ("succeeded", "partial", "failed"),
        timeout=timeout,
        interval=0.05,
    )
    row = await stack.campaign.pool.fetchrow("SELECT state, reason, counts FROM run WHERE run_id = $1", run_id)
    assert row is not None
    return {"state": row["state"], "reason": row["reason"], "counts": orjson.loads(row["counts"])}


async def _rejected(stack: PublishStack, audience_id: str) -> set[str]:
    rows = await stack.campaign.pool.fetch(
        "SELECT id FROM export_rejected_id WHERE audience_id = $1 AND is_add", audience_id
    )
    return {r["id"] for r in rows}


async def test_a_run_is_uploaded_until_processed_after_a_delay_then_succeeds(platform_stack: PublishStack) -> None:
    stack = platform_stack
    await stack.ecsim.admin("PUT", "/inbound/faults", {"delay_s": 2.0})
    ids = [ecid_of(i) for i in range(1, 51)]
    run_id = await add_export_run(stack.campaign.pool, audience_id="ab-delay", data_source="visitors", mode="mirror")
    await stack.produce(export_batches(run_id, "ab-delay", adds=ids, mode="mirror", size=20))
    await eventually(lambda: stack.state(run_id), until=lambda s: s == "uploaded", timeout=30, interval=0.02)
    assert await stack.members("ab-delay") == set()  # pending on the platform: not shared yet

    run = await _ended(stack, run_id)
    assert run["state"] == "succeeded", run
    assert (run["counts"]["applied"], run["counts"]["rejected"]) == (50, 0)
    assert await stack.members("ab-delay") == set(ids) == await stack.trait_members(await stack.trait("ab-delay"))
    events = [e.state for e in await stack.statuses(3)]
    assert events == ["started", "uploaded", "succeeded"]


async def test_rejected_lines_leave_exactly_those_ids_pending(platform_stack: PublishStack) -> None:
    stack = platform_stack
    await stack.ecsim.admin("PUT", "/inbound/faults", {"reject_line_share": 0.1})
    ids = [ecid_of(i) for i in range(1, 81)]
    run_id = await add_export_run(stack.campaign.pool, audience_id="ab-tenth", data_source="visitors", mode="mirror")
    await stack.produce(export_batches(run_id, "ab-tenth", adds=ids, mode="mirror", size=30))

    run = await _ended(stack, run_id)
    assert run["state"] == "partial", run
    assert {k: run["counts"][k] for k in ("uploaded", "applied", "rejected", "rejected_invalid_aam_id")} == {
        "uploaded": 80,
        "applied": 72,
        "rejected": 8,
        "rejected_invalid_aam_id": 8,
    }
    refused = {ids[n - 1] for n in range(10, 81, 10)}  # every tenth line of the one file
    assert await _rejected(stack, "ab-tenth") == refused
    held = await stack.trait_members(await stack.trait("ab-tenth"))
    assert await stack.members("ab-tenth") == set(ids) - refused == held
    # The run is counted when its end is announced, just after the commit the row above showed.
    metrics = await eventually(
        lambda: _metrics_text(stack),
        until=lambda text: 'ab_export_runs_total{state="partial"} 1.0' in text,
        timeout=10,
        interval=0.05,
    )
    assert 'ab_export_lines_rejected_total{reason="invalid_aam_id"} 8.0' in metrics


async def test_a_rejected_file_fails_the_run_and_the_next_mirror_sends_again(platform_stack: PublishStack) -> None:
    stack = platform_stack
    pool = stack.campaign.pool
    await stack.ecsim.admin("PUT", "/inbound/faults", {"reject_files": 1, "reject_file_reason": "unknown partner"})
    ids = [ecid_of(i) for i in range(1, 41)]
    first = await add_export_run(pool, audience_id="ab-again", data_source="visitors", mode="mirror")
    await stack.produce(export_batches(first, "ab-again", adds=ids, mode="mirror"))
    run = await _ended(stack, first)
    assert run["state"] == "failed", run
    assert "unknown partner" in run["reason"]
    assert await stack.members("ab-again") == set()
    assert await _rejected(stack, "ab-again") == set(ids)

    # reconcile's next mirror diffs the list against exported_member: every ID goes again.
    second = await add_export_run(pool, audience_id="ab-again", data_source="visitors", mode="mirror")
    await stack.produce(export_batches(second, "ab-again", adds=ids, mode="mirror"))
    run = await _ended(stack, second)
    assert run["state"] == "succeeded", run
    assert await stack.members("ab-again") == set(ids) == await stack.trait_members(await stack.trait("ab-again"))
    assert await _rejected(stack, "ab-again") == set()


async def test_receipts_that_never_come_fail_the_run_after_the_timeout(platform_stack: PublishStack) -> None:
    stack = platform_stack
    await stack.ecsim.admin("PUT", "/inbound/faults", {"hold": True})
    ids = [ecid_of(i) for i in range(1, 21)]
    run_id = await add_export_run(stack.campaign.pool, audience_id="ab-never", data_source="visitors")
    await stack.produce(export_batches(run_id, "ab-never", adds=ids))
    await eventually(lambda: stack.state(run_id), until=lambda s: s == "uploaded", timeout=30, interval=0.02)
    (key,) = await stack.recorded(run_id)

    run = await _ended(stack, run_id, timeout=RECEIPT_TIMEOUT_S + 20)
    assert run["state"] == "failed", run
    assert run["reason"].startswith(f"the platform has not processed {key.rsplit('/', 1)[-1]}")
    assert not (stack.root / key).exists()  # withdrawn
    assert await stack.members("ab-never") == set()
    _, metrics = await stack.publish.get("/metrics")
    assert "ab_export_receipt_timeouts_total 1.0" in metrics


async def _metrics_text(stack: PublishStack) -> str:
    _, text = await stack.publish.get("/metrics")
    return str(text)
