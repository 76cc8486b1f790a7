"""ingest's real-time receiver against the real broker and Postgres, fed by ecsim's sender: signed deliveries
land on ``segment-events`` before the 200; refused ones write nothing; malformed ones are kept in the DLQ with
the reason; the documentation's sample is taken; a broker that cannot be reached is a 503."""

from __future__ import annotations

import asyncio
import base64
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from services.ecsim.realtime import RealtimeSender, RealtimeTarget, SendResult, user_changes
from services.ingest.audiences import AudienceDirectory, ImportAudience
from services.ingest.events import SegmentEventHandler
from services.ingest.realtime import RealtimeMetrics, RealtimeReceiver
from services.ingest.realtime_http import PATH
from services.ingest.realtime_keys import KeyRing
from services.ingest.realtime_oauth import TokenChecker
from services.reconcile.catalog import CatalogDataSource, upsert_data_source
from shared.formats.realtime import UserChanges, delivery_body
from shared.kafka import Delivery, Producer, ensure_topics
from shared.messages import AudienceMembership, SegmentEvent
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.bench.realtime_load import KeepAliveClient, signed_request
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of
from tests.helpers import read_topic
from tests.unit.test_realtime_format import DOC_SAMPLE

pytestmark = pytest.mark.integration

OLD_KEY, NEW_KEY = b"old-shared-key", b"new-shared-key"


@dataclass
class Receiver:
    url: str
    events_topic: str
    dlq_topic: str
    registry: CollectorRegistry
    bootstrap: str

    def count(self, outcome: str) -> float:
        return self.registry.get_sample_value("ab_realtime_deliveries_total", {"outcome": outcome}) or 0.0

    def skipped(self, reason: str) -> float:
        return self.registry.get_sample_value("ab_realtime_changes_skipped_total", {"reason": reason}) or 0.0

    def writes(self) -> tuple[float, float]:
        """(Kafka writes, deliveries they carried)."""
        count = self.registry.get_sample_value("ab_realtime_write_deliveries_count") or 0.0
        return count, self.registry.get_sample_value("ab_realtime_write_deliveries_sum") or 0.0

    async def events(self, expect: int) -> list[SegmentEvent]:
        records = await read_topic(self.bootstrap, self.events_topic, expect=expect, timeout=3 if not expect else 30)
        return [SegmentEvent.model_validate_json(r.value or b"") for r in records]


async def _receiver(
    campaign: Campaign, tmp_path: Path, bootstrap: str, prefix: str, oauth: TokenChecker | None = None, **kafka: object
) -> AsyncIterator[Receiver]:
    keys = tmp_path / "realtime-keys"
    keys.write_text(f"{OLD_KEY.decode()}\n{NEW_KEY.decode()}\n")  # a rotation: both valid
    settings = KafkaSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, **kafka)  # type: ignore[arg-type]
    events_topic, dlq_topic = f"{prefix}segment-events", f"{prefix}segment-events.dlq"
    registry = CollectorRegistry()
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    receiver = RealtimeReceiver(
        keys=KeyRing(keys),
        header="X-Signature",
        algorithm="sha1",
        producer=producer,
        events_topic=events_topic,
        dead_letter_topic=dlq_topic,
        metrics=RealtimeMetrics(registry),
        response_timeout_s=1.5,
        oauth=oauth,
    )
    receiver.directory = AudienceDirectory(campaign.pool)
    runner = web.ServerRunner(receiver.web_server(access_log=None))  # as a receiver process serves it
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Receiver(f"http://127.0.0.1:{runner.addresses[0][1]}{PATH}", events_topic, dlq_topic, registry, bootstrap)
    finally:
        await runner.cleanup()
        await producer.stop()


@pytest_asyncio.fixture
async def receiver(
    campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[Receiver]:
    await add_import_audience(campaign.pool, "rt-visitors", "visitors", 5001)
    await add_import_audience(campaign.pool, "rt-emails", "hashed-emails", 5001)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}segment-events", f"{topic_prefix}segment-events.dlq"])
    async for r in _receiver(campaign, tmp_path, kafka_bootstrap, topic_prefix):
        yield r


@pytest_asyncio.fixture
async def sender() -> AsyncIterator[RealtimeSender]:
    s = RealtimeSender()
    yield s
    await s.close()


async def test_signed_deliveries_are_on_kafka_when_answered(receiver: Receiver, sender: RealtimeSender) -> None:
    users = [user_changes(ecid_of(i), "ecid", {5001: i % 2 == 1}) for i in range(1, 13)]
    results = await sender.deliver(
        RealtimeTarget(receiver.url, OLD_KEY), user_dpid=1001, destination_id=7001, users=users
    )
    assert [(r.status, r.attempts, r.users) for r in results] == [(200, 1, 10), (200, 1, 2)]
    # Answered 200: the changes are already on the topic (acks=all), no waiting for anything else.
    events = await receiver.events(expect=12)
    assert {(e.id, e.op, e.data_source) for e in events} == {
        (ecid_of(i), "add" if i % 2 == 1 else "remove", "visitors") for i in range(1, 13)
    }
    # The new key of the rotation is as good as the old one.
    again = await sender.deliver(
        RealtimeTarget(receiver.url, NEW_KEY), user_dpid=1001, destination_id=7001, users=users[:1]
    )
    assert again[0].status == 200
    assert receiver.count("accepted") == 3


async def test_deliveries_arriving_together_share_kafka_writes_each_answered_once_written(
    receiver: Receiver,
) -> None:
    """Group commit: 60 deliveries at once go to Kafka in a few writes; every 200 still means on the topic."""
    client = KeepAliveClient(receiver.url)
    bodies = [
        delivery_body(
            user_dpid=1001,
            destination_id=7001,
            client_id="t",
            users=[user_changes(ecid_of(k * 10 + i), "ecid", {5001: True}) for i in range(1, 11)],
            at=datetime.now(UTC),
        )
        for k in range(60)
    ]
    try:
        answers = await asyncio.gather(*(client.deliver(signed_request(receiver.url, b, OLD_KEY)) for b in bodies))
    finally:
        await client.close()
    assert [(a.status, a.attempts) for a in answers] == [(200, 1)] * 60
    writes, carried = receiver.writes()
    assert carried == 60
    assert writes < 30  # most writes carried several deliveries
    events = await receiver.events(expect=600)
    assert {e.id for e in events} == {ecid_of(n) for n in range(1, 601)}


async def test_refused_signatures_write_nothing(receiver: Receiver, sender: RealtimeSender) -> None:
    body = orjson.dumps({"User_DPID": 1001, "AAM_Destination_ID": 7001, "Users": [
        {"AAM_UUID": ecid_of(1), "Segments": [{"Segment_ID": 5001, "Status": 1}]}
    ]})  # fmt: skip
    missing = await sender.send(RealtimeTarget(receiver.url, None), body)
    unknown = await sender.send(RealtimeTarget(receiver.url, b"a key nobody shared"), body)
    wrong = await sender.send(RealtimeTarget(receiver.url, OLD_KEY), body, signature="+wFdR/afZNoVqtGl8/e1KJ4ykPU=")
    other_hash = await sender.send(RealtimeTarget(receiver.url, OLD_KEY, algorithm="sha256"), body)
    # Refused, and tried twice as the platform does (one retry).
    assert [(r.status, r.attempts) for r in (missing, unknown, wrong, other_hash)] == [(401, 2)] * 4
    assert (receiver.count("missing_signature"), receiver.count("bad_signature")) == (2, 6)
    assert await receiver.events(expect=0) == []


async def test_malformed_deliveries_are_kept_with_the_reason(receiver: Receiver, sender: RealtimeSender) -> None:
    target = RealtimeTarget(receiver.url, OLD_KEY)
    not_json = await sender.send(target, b'{"Users": [')
    bad_status = await sender.send(target, DOC_SAMPLE.replace(b'"Status": "0"', b'"Status": "7"'))
    assert (not_json.status, bad_status.status) == (400, 400)
    letters = await read_topic(receiver.bootstrap, receiver.dlq_topic, expect=4)  # each tried twice
    reasons = {dict(r.headers)["dlq.reason"].decode() for r in letters}
    assert any(reason.startswith("not valid JSON") for reason in reasons)
    assert "Users[0].Segments[1].Status must be 1 (active) or 0 (inactive), not 7" in reasons
    assert {r.value for r in letters} == {b'{"Users": [', DOC_SAMPLE.replace(b'"Status": "0"', b'"Status": "7"')}
    assert {dict(r.headers)["dlq.source"] for r in letters} == {f"POST {PATH}".encode()}
    assert receiver.count("malformed") == 4
    assert await receiver.events(expect=0) == []


async def test_the_documentations_sample_is_taken_invalid_ids_counted(
    campaign: Campaign, receiver: Receiver, sender: RealtimeSender
) -> None:
    async with campaign.pool.acquire() as conn:
        await upsert_data_source(conn, CatalogDataSource(name="doc-devices", dpid=12345, id_type="ecid"))
    for segment in (14356, 12176, 10329):
        await add_import_audience(campaign.pool, f"doc-{segment}", "doc-devices", segment)
    result = await sender.send(RealtimeTarget(receiver.url, OLD_KEY), DOC_SAMPLE)
    assert result.status == 200
    events = await receiver.events(expect=2)
    assert {(e.segment_id, e.id, e.op) for e in events} == {
        ("14356", "19393572368547369350319949416899715727", "add"),
        ("12176", "19393572368547369350319949416899715727", "remove"),
    }
    # The second user's 43-digit AAM_UUID (a typo of the documentation) is skipped and counted; 23954 feeds nothing.
    assert receiver.skipped("ecid: not 38 digits") == 1
    assert receiver.skipped("no import audience for the segment from this destination and data source") == 1


async def test_a_broker_out_of_reach_is_a_503(
    campaign: Campaign, tmp_path: Path, free_port: int, topic_prefix: str, sender: RealtimeSender
) -> None:
    await add_import_audience(campaign.pool, "rt-visitors", "visitors", 5001)
    down = f"127.0.0.1:{free_port}"
    async for receiver in _receiver(campaign, tmp_path, down, topic_prefix, kafka_send_timeout_s=1.0):
        users = [user_changes(ecid_of(1), "ecid", {5001: True})]
        results = await sender.deliver(
            RealtimeTarget(receiver.url, OLD_KEY), user_dpid=1001, destination_id=7001, users=users
        )
        assert [(r.status, r.attempts) for r in results] == [(503, 2)]
        assert receiver.count("unavailable") == 2


async def test_within_a_poll_the_latest_change_wins_whatever_the_order(
    campaign: Campaign, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The platform's retry of an older delivery can land in the same poll as the newer one, after it."""
    await add_import_audience(campaign.pool, "rt-poll", "visitors", 5001)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topic = f"{topic_prefix}audience-membership"
    await ensure_topics(settings, [topic, f"{topic_prefix}audience-sync-status"])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()

    async def no_governance(_audience: ImportAudience) -> str | None:
        return None

    handler = SegmentEventHandler(
        directory=AudienceDirectory(campaign.pool),
        producer=producer,
        membership_topic=topic,
        status=RunReporter(producer, service="test", topic_prefix=topic_prefix),
        governance=no_governance,
    )
    t0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    changes = [  # (recipient, op, seconds after t0), in arrival order
        (1, "remove", 10), (1, "add", 0),  # the newer removal first, the retried older add after it
        (2, "add", 5), (2, "remove", 5),  # a tie: arrival order
        (3, "add", 0), (3, "remove", 1), (3, "add", 2),
    ]  # fmt: skip
    deliveries = [
        Delivery(
            message=SegmentEvent(
                event_id=f"ev-{k}",
                segment_id="5001",
                id_type="ecid",
                data_source="visitors",
                id=ecid_of(n),
                op=op,
                occurred_at=t0 + timedelta(seconds=s),
            ),
            topic="segment-events",
            partition=0,
            offset=k,
            key=None,
            headers=(),
        )
        for k, (n, op, s) in enumerate(changes)
    ]
    try:
        assert await handler(deliveries) == []
    finally:
        await producer.stop()
    (record,) = await read_topic(kafka_bootstrap, topic, expect=1)
    batch = AudienceMembership.model_validate_json(record.value or b"")
    assert (set(batch.adds), set(batch.removes)) == ({ecid_of(3)}, {ecid_of(1), ecid_of(2)})


# --- the OAuth 2.0 alternative ----------------------------------------------------------------------------

ISSUER_CLIENT, ISSUER_SECRET, GOOD_TOKEN = "bridge-introspection", "issuer-secret", "platform-token-0123456789"


@dataclass
class Issuer:
    """An OAuth 2.0 server's token introspection (RFC 7662): GOOD_TOKEN is active, anything else is not."""

    url: str
    calls: int = 0
    down: bool = False


@asynccontextmanager
async def oauth_issuer() -> AsyncIterator[Issuer]:
    issuer = Issuer(url="")

    async def introspect(request: web.Request) -> web.Response:
        issuer.calls += 1
        if issuer.down:
            return web.Response(status=503)
        expected = "Basic " + base64.b64encode(f"{ISSUER_CLIENT}:{ISSUER_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        token = (await request.post()).get("token")
        active = token == GOOD_TOKEN
        return web.json_response({"active": True, "exp": int(time.time()) + 3600} if active else {"active": False})

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    issuer.url = str(server.make_url("/introspect"))
    try:
        yield issuer
    finally:
        await server.close()


async def test_a_bearer_token_is_checked_with_its_issuer(
    campaign: Campaign, tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, sender: RealtimeSender
) -> None:
    await add_import_audience(campaign.pool, "rt-visitors", "visitors", 5001)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}segment-events", f"{topic_prefix}segment-events.dlq"])
    async with oauth_issuer() as issuer:
        oauth = TokenChecker(issuer.url, ISSUER_CLIENT, ISSUER_SECRET)
        async for receiver in _receiver(campaign, tmp_path, kafka_bootstrap, topic_prefix, oauth=oauth):
            users = [user_changes(ecid_of(1), "ecid", {5001: True})]

            async def deliver(token: str, url: str = receiver.url, users: list[UserChanges] = users) -> SendResult:
                target = RealtimeTarget(url, None, bearer=token)
                (result,) = await sender.deliver(target, user_dpid=1001, destination_id=7001, users=users)
                return result

            assert (await deliver("a token nobody issued")).status == 401
            assert receiver.count("bad_token") == 2
            assert await receiver.events(expect=0) == []
            assert (await deliver(GOOD_TOKEN)).status == 200
            assert [e.id for e in await receiver.events(expect=1)] == [ecid_of(1)]
            calls = issuer.calls
            assert (await deliver(GOOD_TOKEN)).status == 200
            assert issuer.calls == calls  # remembered until it expires
            # Signatures still work beside tokens, and a token is no excuse for a wrong signature.
            signed = await sender.send(RealtimeTarget(receiver.url, OLD_KEY, bearer=GOOD_TOKEN), b"{}")
            assert signed.status == 400  # authenticated, then malformed
            forged = await sender.send(RealtimeTarget(receiver.url, b"wrong", bearer=GOOD_TOKEN), b"{}")
            assert forged.status == 401
            await oauth.close()
            issuer.down = True
            assert (await deliver("another token")).status == 503
            assert receiver.count("unavailable") == 2
            await oauth.close()


async def test_deliveries_leave_no_reference_cycles(receiver: Receiver) -> None:
    """What lets a receiver process collect rarely (services/ingest/realtime_worker.py COLLECTOR_THRESHOLDS): a
    delivery's objects are freed when it is answered; none waits for the collector to find it in a cycle."""
    client = KeepAliveClient(receiver.url)

    def delivery(k: int) -> bytes:
        users = [user_changes(ecid_of(k * 10 + i), "ecid", {5001: True}) for i in range(1, 11)]
        body = delivery_body(user_dpid=1001, destination_id=7001, client_id="t", users=users, at=datetime.now(UTC))
        return signed_request(receiver.url, body, OLD_KEY)

    deliveries = 200
    try:
        assert (await client.deliver(delivery(0))).status == 200  # the directory loaded, connections made
        gc.collect()
        gc.disable()
        try:
            for start in range(1, deliveries + 1, 20):  # several at once: group writes, as under load
                answers = await asyncio.gather(*(client.deliver(delivery(k)) for k in range(start, start + 20)))
                assert {a.status for a in answers} == {200}
            found = gc.collect()
        finally:
            gc.enable()
    finally:
        await client.close()
    # One cycle a delivery would be dozens of objects each (its frames, futures, the parsed JSON).
    assert found < deliveries // 10, f"{found} objects in reference cycles after {deliveries} deliveries"
