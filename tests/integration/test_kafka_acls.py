"""Kafka with SASL/SCRAM and ACLs, on a real broker (a second one, made from docker-compose.yml's broker
configuration, see tests/fixtures/sasl_kafka.py): reconcile runs as its own principal with exactly the ACLs
deploy/kafka-sasl/acls.txt gives it (what compose creates and the README lists), a campaign workflow may
write export requests, and a principal without WRITE on ``audience-export-requests`` cannot request an
export."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.reconcile.catalog import ensure_list
from shared.kafka import Producer, ensure_topics
from shared.kafka.connection import connection_kwargs
from shared.messages import AudienceExportBatch, AudienceExportRequest
from shared.metrics import RuntimeMetrics
from shared.runs import store
from shared.topics import dlq_name
from tests.fixtures.bridge_db import Campaign
from tests.fixtures.sasl_kafka import TOPIC, Acl, SaslKafka, readme_acls, sasl_kafka  # noqa: F401
from tests.fixtures.stack import StartService, start_service  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.integration

PREFIX = "acl."
CONSUMED = ["audience-membership", "audience-export-requests", "recipient-changes", "visitor-links"]
PRODUCED = ["audience-export-batches", "audience-sync-status", "audience-export-requests"]
CATALOG = """
export_audiences:
  - {list: vip, data_source: hashed-emails, audience_name: VIP, requesters: ["kafka:campaign-workflow"]}
"""


async def _batches(kafka: SaslKafka, expect: int) -> list[AudienceExportBatch]:
    consumer = AIOKafkaConsumer(
        PREFIX + "audience-export-batches",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **connection_kwargs(kafka.settings("admin"), "test-reader"),
    )
    await consumer.start()
    try:
        got: list[AudienceExportBatch] = []

        async def poll() -> int:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(AudienceExportBatch.model_validate_json(r.value or b"") for r in records)
            return len(got)

        await eventually(poll, until=lambda n: n >= expect, timeout=60)
        return got
    finally:
        await consumer.stop()


@pytest.mark.timeout(300)  # a broker of its own to format and start
async def test_only_a_principal_with_write_may_request_an_export(
    sasl_kafka: SaslKafka,  # noqa: F811
    campaign: Campaign,
    database_url: str,
    start_service: StartService,  # noqa: F811
    tmp_path: Path,
) -> None:
    kafka = sasl_kafka
    # The deployment creates the topics (as the admin) and the ACLs.
    topics = [PREFIX + t for t in {*CONSUMED, *PRODUCED}] + [dlq_name(PREFIX + t) for t in CONSUMED]
    await ensure_topics(kafka.settings("admin", PREFIX), topics)
    requests = PREFIX + "audience-export-requests"
    await kafka.grant([*readme_acls(PREFIX, ["reconcile"]), Acl("campaign-workflow", TOPIC, requests, "Write")])
    async with campaign.pool.acquire() as conn:
        list_id = await ensure_list(conn, "vip")
        await conn.executemany(
            "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)", [(list_id, r) for r in range(1, 6)]
        )
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    env = {
        **kafka.env("reconcile"),
        "TOPIC_PREFIX": PREFIX,
        "DATABASE_URL": database_url,
        "CATALOG_FILE": str(catalog),
        "EXPORT_ALLOW_UNDECLARED": "false",
    }
    await start_service("reconcile", env=env)  # ready: it consumes with its own principal

    # The intruder authenticates, but no ACL lets it write the topic: the broker refuses the record.
    intruder = AIOKafkaProducer(request_timeout_ms=10_000, **connection_kwargs(kafka.settings("intruder"), "intruder"))
    await intruder.start()
    forged = AudienceExportRequest(
        list_id="vip", audience_name="VIP", data_source="hashed-emails", requested_by="campaign-workflow"
    )
    try:
        with pytest.raises(KafkaError) as refused:
            await intruder.send_and_wait(requests, forged.model_dump_json().encode())
    finally:
        await intruder.stop()
    assert "Authorization" in type(refused.value).__name__ or "authoriz" in str(refused.value).lower()

    # The workflow, with WRITE, asks; reconcile (with its ACLs) shares the list.
    producer = Producer(kafka.settings("campaign-workflow", PREFIX), "workflow", RuntimeMetrics("workflow"))
    await producer.start()
    asked = AudienceExportRequest(
        list_id="vip", audience_name="VIP", data_source="hashed-emails", requested_by="campaign-workflow"
    )
    try:
        await producer.send_model(requests, asked)
    finally:
        await producer.stop()
    [batch] = await _batches(kafka, expect=1)
    assert len(batch.adds) == 5

    async def runs() -> list[object]:
        async with campaign.pool.acquire() as conn:
            return [await store.latest_of_request(conn, r.request_id) for r in (asked, forged)]

    done, never = await runs()
    assert done is not None
    assert never is None  # the forged request never reached the topic
