"""Real-time deliveries end to end: ecsim changes a segment's members and POSTs the changes, signed, the way the
platform does -> ingest's ``/platform/realtime`` -> ``segment-events`` -> ingest -> Kafka -> reconcile -> campaign
lists, with the services running as processes.

A signed delivery puts its users in the list and ``Status: 0`` takes them out; both keys of a rotation are
accepted; a wrong signature, a missing one and an unknown key are refused with nothing written; the
documentation's own sample is taken; a retried delivery changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.reconcile.catalog import CatalogDataSource, upsert_data_source
from shared.settings import REPO_ROOT, KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.ecsim import EcsimEndpoint, ecsim, ecsim_server  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, free_port, start_service  # noqa: F401
from tests.helpers import committed_offsets, eventually
from tests.integration.test_realtime_receiver import GOOD_TOKEN, ISSUER_CLIENT, ISSUER_SECRET, Issuer, oauth_issuer
from tests.unit.test_realtime_format import DOC_SAMPLE

pytestmark = pytest.mark.e2e

OLD_KEY, NEW_KEY = "rotation-old-key", "rotation-new-key"
VISITORS_DESTINATION, EMAILS_DESTINATION = 7001, 7002
SEG_VISITORS, SEG_EMAILS, SEG_DOC = 5001, 5002, 14356
DOC_AAM_UUID = "19393572368547369350319949416899715727"

PLATFORM_SEED: dict[str, Any] = {
    "datasources": [
        {"dataSourceId": 1001, "name": "Adobe Campaign (MID)", "idType": "COOKIE"},
        {"dataSourceId": 1002, "name": "Adobe Campaign (DeclaredId)", "idType": "CROSS_DEVICE"},
        {"dataSourceId": 12345, "name": "The documentation's devices", "idType": "COOKIE"},
    ],
    "traits": [{"sid": 9001, "name": "t", "traitType": "ON_BOARDED_TRAIT", "dataSourceId": 1001, "folderId": 0}],
    "segments": [
        {"sid": sid, "name": f"s{sid}", "segmentRule": "9001T", "dataSourceId": 1001, "folderId": 0}
        for sid in (SEG_VISITORS, SEG_EMAILS, SEG_DOC)
    ],
    "destinations": [
        {"destinationId": d, "name": f"d{d}", "destinationType": "S2S", "dataSourceId": ds, "mappings": [{"sid": s}]}
        for d, ds, s in ((VISITORS_DESTINATION, 1001, SEG_VISITORS), (EMAILS_DESTINATION, 1002, SEG_EMAILS))
    ],
}


@dataclass
class RealtimeStack:
    campaign: Campaign
    ecsim: EcsimEndpoint
    ingest: ServiceProcess
    url: str
    topic_prefix: str
    bootstrap: str

    async def caught_up(self) -> None:
        """Wait until ingest has handled (committed) every segment event written so far, on every partition (a
        delivery's users spread over them: segment-events is keyed by segment and ID)."""
        topic = f"{self.topic_prefix}segment-events"
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            # ingest created the topic with the partitions KafkaSettings says (the same environment).
            partitions = [TopicPartition(topic, p) for p in range(KafkaSettings().kafka_topic_partitions)]
            ends = {tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()}
        finally:
            await consumer.stop()
        assert sum(ends.values()) > 0  # the deliveries so far are on the topic
        group = f"{self.topic_prefix}audience-bridge-ingest.segment-events"
        await eventually(
            lambda: committed_offsets(self.bootstrap, group),
            until=lambda got: all(got.get(p, 0) >= end for p, end in ends.items()),
            timeout=60,
        )

    async def members(self, audience: str) -> set[int]:
        rows = await self.campaign.pool.fetch(
            "SELECT recipient_id FROM list_member JOIN shared_audience USING (list_id) WHERE audience_id = $1",
            audience,
        )
        return {r["recipient_id"] for r in rows}

    async def wait_members(self, audience: str, expected: set[int]) -> None:
        await eventually(lambda: self.members(audience), until=lambda m: m == expected, timeout=60)

    async def runs(self, audience: str) -> list[asyncpg.Record]:
        return await self.campaign.pool.fetch(
            "SELECT * FROM run WHERE audience_id = $1 AND state = 'succeeded' ORDER BY started_at", audience
        )

    async def change(self, destination: int, segment: int, key: str, **ids: list[str]) -> dict[str, Any]:
        body = {"destinationId": destination, "segmentId": segment, "url": self.url, "signingKey": key, **ids}
        result: dict[str, Any] = await self.ecsim.admin("POST", "/realtime/members", body)
        return result

    async def send(self, **request: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.ecsim.admin("POST", "/realtime/deliveries", {"url": self.url, **request})
        return result

    async def metric(self, outcome: str) -> float:
        async with aiohttp.ClientSession() as session, session.get(f"{self.ingest.url}/metrics") as response:
            text = await response.text()
        prefix = f'ab_realtime_deliveries_total{{outcome="{outcome}"}} '
        return next(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    """The OAuth 2.0 server the platform would get bearer tokens from."""
    async with oauth_issuer() as running:
        yield running


@pytest.fixture
def workers() -> str:
    """REALTIME_WORKERS of the stack's ingest (its default; a test parametrizes ``workers`` for another)."""
    return "1"


@pytest_asyncio.fixture
async def stack(
    workers: str,
    issuer: Issuer,
    campaign: Campaign,
    ecsim: EcsimEndpoint,  # noqa: F811
    start_service: StartService,  # noqa: F811
    database_url: str,
    topic_prefix: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> AsyncIterator[RealtimeStack]:
    await ecsim.seed(PLATFORM_SEED)
    await add_import_audience(campaign.pool, "rt-visitors", "visitors", SEG_VISITORS)
    await add_import_audience(campaign.pool, "rt-emails", "hashed-emails", SEG_EMAILS)
    async with campaign.pool.acquire() as conn:
        await upsert_data_source(conn, CatalogDataSource(name="doc-devices", dpid=12345, id_type="ecid"))
        await conn.execute("INSERT INTO visitor_link (ecid, recipient_id) VALUES ($1, 7)", DOC_AAM_UUID)
    await add_import_audience(campaign.pool, "rt-doc", "doc-devices", SEG_DOC)
    keys = tmp_path / "realtime-keys"
    keys.write_text(f"# a rotation: both keys valid\n{OLD_KEY}\n{NEW_KEY}\n")
    port = free_port()
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "IMPORT_DROPZONE_URL": f"file://{tmp_path / 'import'}",
        "PLATFORM_IMS_URL": ecsim.ims_url,
        "PLATFORM_API_URL": ecsim.api_url,
        "REALTIME_ENABLED": "true",
        "REALTIME_PORT": str(port),
        "REALTIME_WORKERS": workers,
        "REALTIME_SIGNING_KEYS_FILE": str(keys),
        "REALTIME_OAUTH_INTROSPECTION_URL": issuer.url,
        "REALTIME_OAUTH_CLIENT_ID": ISSUER_CLIENT,
        "REALTIME_OAUTH_CLIENT_SECRET": ISSUER_SECRET,
    }
    # Side by side: the database is migrated already, and each creates the topics it needs.
    _, ingest = await asyncio.gather(start_service("reconcile", env=env), start_service("ingest", env=env))
    url = f"http://127.0.0.1:{port}/platform/realtime"
    yield RealtimeStack(campaign, ecsim, ingest, url, topic_prefix, kafka_bootstrap)


# In receiver processes of its own (the default, 1, and 2 sharing the port) or in ingest's process (0).
@pytest.mark.parametrize("workers", ["1", "2", "0"])
async def test_a_signed_delivery_adds_and_status_0_removes(stack: RealtimeStack) -> None:
    added = await stack.change(VISITORS_DESTINATION, SEG_VISITORS, OLD_KEY, add=[ecid_of(i) for i in range(1, 26)])
    assert [(m["status"], m["users"]) for m in added["messages"]] == [(200, 10), (200, 10), (200, 5)]
    await stack.wait_members("rt-visitors", set(range(1, 26)))

    # Signed with the rotation's new key: as good as the old one.
    removed = await stack.change(VISITORS_DESTINATION, SEG_VISITORS, NEW_KEY, remove=[ecid_of(i) for i in range(1, 6)])
    assert removed["failed"] == 0
    assert removed["removed"] == 5
    await stack.wait_members("rt-visitors", set(range(6, 26)))

    # A declared data source's destination: DataPartner_UUID is the ID.
    emails = await stack.change(EMAILS_DESTINATION, SEG_EMAILS, OLD_KEY, add=[hashed_email_of(i) for i in (40, 41)])
    assert emails["failed"] == 0
    await stack.wait_members("rt-emails", {40, 41})
    assert await stack.members("rt-visitors") == set(range(6, 26))


def _delivery(*recipients: int) -> dict[str, Any]:
    return {
        "User_DPID": 1001,
        "AAM_Destination_ID": VISITORS_DESTINATION,
        "Users": [
            {"AAM_UUID": ecid_of(i), "Segments": [{"Segment_ID": SEG_VISITORS, "Status": 1}]} for i in recipients
        ],
    }


async def test_refused_signatures_write_nothing_and_a_retry_changes_nothing(stack: RealtimeStack) -> None:
    refused = _delivery(3, 4)
    wrong = await stack.send(body=refused, signingKey=OLD_KEY, signature="+wFdR/afZNoVqtGl8/e1KJ4ykPU=")
    missing = await stack.send(body=refused, unsigned=True)
    unknown = await stack.send(body=refused, signingKey="a key nobody shared")
    assert [(r["status"], r["attempts"]) for r in (wrong, missing, unknown)] == [(401, 2)] * 3
    assert (await stack.metric("bad_signature"), await stack.metric("missing_signature")) == (4, 2)

    # A signed delivery sent after them is applied; the refused ones, ahead of it, never reached the list.
    body = _delivery(1, 2)
    first = await stack.send(body=body, signingKey=OLD_KEY)
    assert first["status"] == 200
    await stack.wait_members("rt-visitors", {1, 2})
    # Sent again, as the platform's retry after a timeout would: nothing changes. Once ingest has handled every
    # event written so far, the retry has been through; a later delivery of user 3 is then applied.
    runs_before = len(await stack.runs("rt-visitors"))
    again = await stack.send(body=body, signingKey=OLD_KEY)
    assert again["status"] == 200
    await stack.caught_up()
    marker = await stack.send(body=_delivery(3), signingKey=OLD_KEY)
    assert marker["status"] == 200
    await stack.wait_members("rt-visitors", {1, 2, 3})
    later = [orjson.loads(r["counts"]) for r in (await stack.runs("rt-visitors"))[runs_before:]]
    # Only the marker's user was added by whatever ran since (the retry was ignored, or applied as nothing).
    assert sum(c.get("added", 0) for c in later) == 1
    assert sum(c.get("removed", 0) for c in later) == 0


async def test_the_documentations_sample_is_taken(stack: RealtimeStack) -> None:
    result = await stack.send(rawBody=DOC_SAMPLE.decode(), signingKey=NEW_KEY)
    assert result["status"] == 200
    assert result["attempts"] == 1
    await stack.wait_members("rt-doc", {7})
    malformed = await stack.send(
        rawBody=DOC_SAMPLE.decode().replace('"Status": "1"', '"Status": "yes"'), signingKey=OLD_KEY
    )
    assert malformed["status"] == 400
    assert await stack.metric("malformed") == 2


@pytest.mark.parametrize("keys", [None, "", "# only a comment\n"])
async def test_enabled_without_a_key_refuses_to_start(tmp_path: Path, database_url: str, keys: str | None) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "REALTIME_ENABLED": "true", "HTTP_PORT": str(free_port())}
    env.pop("REALTIME_SIGNING_KEYS_FILE", None)
    if keys is not None:
        (tmp_path / "keys").write_text(keys)
        env["REALTIME_SIGNING_KEYS_FILE"] = str(tmp_path / "keys")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ingest", cwd=REPO_ROOT, env=env, stdout=PIPE, stderr=PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    said = (stdout + stderr).decode()
    assert "invalid_settings" in said
    assert "REALTIME_SIGNING_KEYS_FILE" in said


async def test_a_bearer_token_from_the_issuer_instead_of_a_signature(stack: RealtimeStack) -> None:
    body = _delivery(8, 9)
    refused = await stack.send(body=body, unsigned=True, bearerToken="a token nobody issued")
    assert (refused["status"], refused["attempts"]) == (401, 2)
    assert await stack.metric("bad_token") == 2
    taken = await stack.send(body=body, unsigned=True, bearerToken=GOOD_TOKEN)
    assert taken["status"] == 200
    await stack.wait_members("rt-visitors", {8, 9})
