"""An export run follows the platform: real Postgres, Kafka (status events) and ecsim processing the files.

The publisher writes into ecsim's own export zone, ecsim processes the files (with the delays and
rejections it is told to make under ``/sim/inbound/faults``) and writes receipts; the receipt poller reads
them through the platform client and ends the runs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from services.ecsim.zones import FaultyDropZone, ZoneFault
from services.publish.metrics import PrometheusPublishMetrics
from services.publish.receipt_poller import ReceiptPoller
from services.publish.receipts import ReceiptOptions
from services.reconcile.export_diff import diff_sql
from services.reconcile.status_json import snapshot_json
from services.reconcile.status_page import render_page
from services.reconcile.status_queries import load_snapshot
from shared.dropzone import FileDropZone
from shared.kafka import Producer, ensure_topics
from shared.metrics import RuntimeMetrics
from shared.platform import PlatformClient
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_export_run, ecid_of
from tests.fixtures.ecsim import EcsimEndpoint, ecsim, ecsim_server  # noqa: F401
from tests.integration.test_cli import _cli
from tests.integration.test_publish_runs import PLATFORM_SEED, Rig, export_batches

pytestmark = pytest.mark.integration

ENDED_WITHIN_S = 20.0


@pytest_asyncio.fixture
async def rig(
    campaign: Campaign,
    ecsim: EcsimEndpoint,  # noqa: F811
    kafka_bootstrap: str,
    topic_prefix: str,
) -> AsyncIterator[Rig]:
    """publish writing into ecsim's export zone, so that ecsim processes what it writes."""
    await ecsim.seed(PLATFORM_SEED)
    assert ecsim.export_dir is not None
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    status_topic = f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [status_topic])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    platform = PlatformClient(ecsim.platform_settings(platform_max_attempts=3))
    zone = FaultyDropZone(FileDropZone(ecsim.export_dir), ZoneFault())
    yield Rig(
        campaign=campaign,
        ecsim=ecsim,
        root=ecsim.export_dir,
        zone=zone,
        platform=platform,
        status=RunReporter(producer, service="publish", topic_prefix=topic_prefix),
        producer=producer,
        topic_prefix=topic_prefix,
        bootstrap=kafka_bootstrap,
        status_topic=status_topic,
    )
    await ecsim.admin("DELETE", "/inbound/faults")
    await platform.close()
    await producer.stop()


def poller(rig: Rig, *, timeout_s: float = 600.0, registry: CollectorRegistry | None = None) -> ReceiptPoller:
    metrics = PrometheusPublishMetrics(registry or CollectorRegistry())
    options = ReceiptOptions(poll_s=0.05, poll_max_s=0.2, timeout_s=timeout_s)
    return ReceiptPoller(rig.campaign.pool, rig.platform, rig.zone, rig.status, options, metrics=metrics)


async def until_ended(rig: Rig, run_id: uuid.UUID, receipts: ReceiptPoller) -> dict[str, Any]:
    """Poll as the service does until the run leaves ``uploaded`` (ecsim processes files every 0.2 s)."""
    deadline = time.monotonic() + ENDED_WITHIN_S
    while time.monotonic() < deadline:
        await receipts.poll_once()
        run = await rig.run(run_id)
        if run["state"] != "uploaded":
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} still uploaded after {ENDED_WITHIN_S} s")


async def trait_members(rig: Rig, audience_id: str) -> set[str]:
    sid = (await rig.audience(audience_id))["platform_trait_id"]
    body = await rig.ecsim.admin("GET", f"/traits/{sid}/members?ids=true&pageSize=100000")
    return set(body["ids"])


async def rejected_ids(rig: Rig, audience_id: str) -> dict[str, str]:
    rows = await rig.campaign.pool.fetch(
        "SELECT id, reason FROM export_rejected_id WHERE audience_id = $1 AND is_add", audience_id
    )
    return {r["id"]: r["reason"] for r in rows}


async def test_a_run_is_uploaded_until_the_platform_processed_it_then_succeeds(rig: Rig) -> None:
    await rig.ecsim.admin("PUT", "/inbound/faults", {"delay_s": 1.0})
    adds = [ecid_of(i) for i in range(1, 41)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-late", data_source="visitors", mode="mirror")
    await rig.publish(export_batches(run_id, "ab-late", adds=adds, mode="mirror"), rig.publisher(await_receipts=True))

    run = await rig.run(run_id)
    assert run["state"] == "uploaded"
    assert run["counts"]["uploaded"] == 40
    assert await rig.members("ab-late") == set()  # pending: staged, not counted as shared yet
    receipts = poller(rig)
    assert await receipts.poll_once() == 0  # no receipt yet: nothing changes

    run = await until_ended(rig, run_id, receipts)
    assert run["state"] == "succeeded"
    assert run["reason"] is None
    assert {k: run["counts"][k] for k in ("added", "uploaded", "applied", "rejected")} == {
        "added": 40,
        "uploaded": 40,
        "applied": 40,
        "rejected": 0,
    }
    assert await rig.members("ab-late") == set(adds) == await trait_members(rig, "ab-late")
    files = await rig.campaign.pool.fetch("SELECT receipt_status, lines_applied FROM published_file")
    assert [(f["receipt_status"], f["lines_applied"]) for f in files] == [("applied", 40)]
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM publish_stage_batch") == 0
    assert [e.state for e in await rig.statuses(3)] == ["started", "uploaded", "succeeded"]


async def test_rejected_lines_end_the_run_partial_and_only_those_ids_stay_unshared(rig: Rig, database_url: str) -> None:
    await rig.ecsim.admin("PUT", "/inbound/faults", {"reject_line_share": 0.1})
    adds = [ecid_of(i) for i in range(1, 61)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-some", data_source="visitors", mode="mirror")
    batches = export_batches(run_id, "ab-some", adds=adds, mode="mirror", size=25)
    await rig.publish(batches, rig.publisher(await_receipts=True))
    registry = CollectorRegistry()

    run = await until_ended(rig, run_id, poller(rig, registry=registry))
    assert run["state"] == "partial"
    assert {k: run["counts"][k] for k in ("uploaded", "applied", "rejected", "rejected_invalid_aam_id")} == {
        "uploaded": 60,
        "applied": 54,
        "rejected": 6,
        "rejected_invalid_aam_id": 6,
    }
    assert "rejected 6 of 60 lines" in run["reason"]
    # Every tenth line was refused: those IDs, and only those, are not counted as shared.
    refused = {adds[n - 1] for n in range(10, 61, 10)}
    assert await rejected_ids(rig, "ab-some") == dict.fromkeys(refused, "invalid_aam_id")
    assert await rig.members("ab-some") == set(adds) - refused == await trait_members(rig, "ab-some")
    assert registry.get_sample_value("ab_export_lines_rejected_total", {"reason": "invalid_aam_id"}) == 6

    # The status page and `audience-bridge run RUN` show the file: lines uploaded vs applied, and why not.
    snapshot = await load_snapshot(rig.campaign.pool)
    (shown,) = snapshot_json(snapshot)["export_files"]
    assert {k: shown[k] for k in ("lines_uploaded", "lines_applied", "lines_rejected", "receipt", "rejected_by")} == {
        "lines_uploaded": 60,
        "lines_applied": 54,
        "lines_rejected": 6,
        "receipt": "partial",
        "rejected_by": {"invalid_aam_id": 6},
    }
    page = render_page(snapshot)
    assert 'data-outcome="partial"' in page
    assert "invalid_aam_id: 6" in page
    code, out = await _cli({"DATABASE_URL": database_url}, "run", str(run_id))
    assert code == 0, out
    shown_by_cli = orjson.loads(out)
    assert shown_by_cli["state"] == "partial"
    assert [(f["lines_uploaded"], f["lines_applied"], f["receipt"]) for f in shown_by_cli["files"]] == [
        (60, 54, "partial")
    ]


async def test_a_rejected_file_fails_the_run_and_the_next_run_sends_its_ids_again(rig: Rig) -> None:
    await rig.ecsim.admin("PUT", "/inbound/faults", {"reject_files": 1, "reject_file_reason": "wrong partner"})
    adds = [ecid_of(i) for i in range(1, 31)]
    pool = rig.campaign.pool
    first = await add_export_run(pool, audience_id="ab-bounce", data_source="visitors", mode="mirror")
    await rig.publish(export_batches(first, "ab-bounce", adds=adds, mode="mirror"), rig.publisher(await_receipts=True))
    receipts = poller(rig)

    run = await until_ended(rig, first, receipts)
    assert run["state"] == "failed"
    assert "wrong partner" in run["reason"]
    assert run["counts"]["rejected_file_rejected"] == 30
    assert await rig.members("ab-bounce") == set()
    assert set(await rejected_ids(rig, "ab-bounce")) == set(adds)

    # The next mirror diffs against exported_member: nothing of the first run is there, so all is sent again.
    second = await add_export_run(pool, audience_id="ab-bounce", data_source="visitors", mode="mirror")
    await rig.publish(export_batches(second, "ab-bounce", adds=adds, mode="mirror"), rig.publisher(await_receipts=True))
    run = await until_ended(rig, second, receipts)
    assert run["state"] == "succeeded"
    assert await rig.members("ab-bounce") == set(adds) == await trait_members(rig, "ab-bounce")
    assert await rejected_ids(rig, "ab-bounce") == {}


async def test_a_file_never_processed_fails_the_run_after_the_timeout_and_is_withdrawn(rig: Rig) -> None:
    await rig.ecsim.admin("PUT", "/inbound/faults", {"hold": True})
    adds = [ecid_of(i) for i in range(1, 11)]
    run_id = await add_export_run(rig.campaign.pool, audience_id="ab-lost", data_source="visitors")
    await rig.publish(export_batches(run_id, "ab-lost", adds=adds), rig.publisher(await_receipts=True))
    (key,) = [r["name"] for r in await rig.campaign.pool.fetch("SELECT name FROM published_file")]
    assert (rig.root / key).exists()
    registry = CollectorRegistry()
    receipts = poller(rig, timeout_s=0.5, registry=registry)

    run = await until_ended(rig, run_id, receipts)
    assert run["state"] == "failed"
    assert run["reason"].startswith(f"the platform has not processed {key.rsplit('/', 1)[-1]} within 0.5 s")
    assert not (rig.root / key).exists()  # withdrawn: the platform cannot apply it after the run ended
    assert await rig.members("ab-lost") == set()
    assert set(await rejected_ids(rig, "ab-lost")) == set(adds)
    assert registry.get_sample_value("ab_export_receipt_timeouts_total") == 1


async def test_refused_lines_the_receipt_does_not_name_stay_shared_and_are_sent_again(rig: Rig) -> None:
    # Half the lines refused: more than the receipt's 10 error samples name, so which ones is unknown.
    await rig.ecsim.admin("PUT", "/inbound/faults", {"reject_line_share": 0.5})
    adds = [ecid_of(i) for i in range(1, 41)]
    pool = rig.campaign.pool
    run_id = await add_export_run(pool, audience_id="ab-unsure", data_source="visitors", mode="mirror")
    await rig.publish(export_batches(run_id, "ab-unsure", adds=adds, mode="mirror"), rig.publisher(await_receipts=True))

    run = await until_ended(rig, run_id, poller(rig))
    assert run["state"] == "partial"
    assert (run["counts"]["rejected"], run["counts"]["unconfirmed"]) == (20, 20)
    # Kept as shared (a removal is still sent when they leave), listed as unconfirmed ...
    assert await rig.members("ab-unsure") == set(adds)
    assert await rejected_ids(rig, "ab-unsure") == dict.fromkeys(adds, "unconfirmed")
    # ... and reconcile's next diff sends them again.
    current = "SELECT x AS id FROM unnest($3::text[]) AS x WHERE $1::bigint IS NOT NULL"
    adds_query, _ = diff_sql(current, "mirror")
    resent = await pool.fetch(adds_query.sql, 0, "ab-unsure", adds)
    assert {r["id"] for r in resent} == set(adds)
