"""Governance twice, through the running services: membership written straight to ``audience-membership`` for
an audience the data export controls forbid is refused by reconcile (dead-lettered with the policy reason,
counted, the run blocked) and nothing reaches the list. The stack is test_import_flow.py's."""

from __future__ import annotations

import uuid

import pytest

from services.reconcile.catalog import CatalogDataSource, upsert_data_source
from shared.kafka import Producer
from shared.messages import AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings
from tests.e2e.test_import_flow import SEG_PII, SEG_VISITORS, ImportStack, Row, stack  # noqa: F401
from tests.fixtures.bridge_db import add_import_audience, ecid_of
from tests.fixtures.ecsim import ecsim, ecsim_server  # noqa: F401
from tests.fixtures.stack import start_service  # noqa: F401
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.e2e


async def _write_membership(stack: ImportStack, kafka_bootstrap: str, audience_id: str, data_source: str) -> uuid.UUID:  # noqa: F811
    """What a producer bypassing ingest would write: a whole full run in one batch."""
    prefix = stack.env["TOPIC_PREFIX"]
    batch = AudienceMembership(
        run_id=uuid.uuid4(),
        seq=0,
        last=True,
        audience_id=audience_id,
        data_source=data_source,
        adds=[ecid_of(i) for i in range(1, 11)],
        id_type="ecid",
        mode="full",
        totals={"received": 10},
    )
    producer = Producer(
        KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix), "test", RuntimeMetrics("t")
    )
    await producer.start()
    try:
        await producer.send_model(f"{prefix}audience-membership", batch)
    finally:
        await producer.stop()
    return batch.run_id


def _headers(record: object) -> dict[str, str]:
    return {k: v.decode() for k, v in getattr(record, "headers", ())}


async def _dead_letters(stack: ImportStack, kafka_bootstrap: str, expect: int) -> list[dict[str, str]]:  # noqa: F811
    topic = f"{stack.env['TOPIC_PREFIX']}audience-membership.dlq"
    return [_headers(r) for r in await read_topic(kafka_bootstrap, topic, expect=expect, timeout=60)]


async def _blocked_reports(stack: ImportStack, run_id: uuid.UUID) -> list[dict[str, object]]:  # noqa: F811
    return [
        line
        for line in stack.reconcile.log_lines()
        if line["event"] == "run_status" and line.get("run_id") == str(run_id) and line.get("state") == "blocked"
    ]


async def test_a_direct_write_for_a_segment_the_platform_restricts_is_refused(
    stack: ImportStack,  # noqa: F811
    kafka_bootstrap: str,
) -> None:
    # ingest meets the restricted segment first (and records the platform's verdict); its own check holds.
    rows: list[Row] = [(ecid_of(i), [SEG_PII, SEG_VISITORS], []) for i in range(1, 6)]
    await stack.deliver("full", rows)
    await eventually(lambda: stack.members("visitors-5001"), until=lambda m: m == set(range(1, 6)), timeout=60)
    refusal = await stack.campaign.pool.fetchval(
        "SELECT refusal FROM segment_governance WHERE platform_segment_id = $1", SEG_PII
    )
    assert refusal is not None
    assert "personally identifiable" in refusal

    run_id = await _write_membership(stack, kafka_bootstrap, "mixed-5003", "visitors")
    [letter] = await _dead_letters(stack, kafka_bootstrap, expect=1)
    assert letter["dlq.error"] == "PolicyRefused"
    assert letter["dlq.reason"].startswith("policy: segment 5003")
    assert letter["dlq.service"] == "reconcile"
    blocked = await eventually(lambda: _blocked_reports(stack, run_id), until=bool, timeout=30)
    assert str(blocked[0]["reason"]).startswith("policy:")
    assert await stack.members("mixed-5003") == set()
    assert await stack.runs("mixed-5003") == []  # nothing of the batch was written, not even its run
    _, metrics = await stack.reconcile.get("/metrics")
    assert 'error="PolicyRefused"' in metrics


async def test_a_direct_write_for_a_pii_restricted_data_source_is_refused(
    stack: ImportStack,  # noqa: F811
    kafka_bootstrap: str,
) -> None:
    async with stack.campaign.pool.acquire() as conn:
        restricted = CatalogDataSource(name="partner-visitors", dpid=1009, id_type="ecid", export_controls=("PII",))
        await upsert_data_source(conn, restricted)
    await add_import_audience(stack.campaign.pool, "partner-5001", "partner-visitors", SEG_VISITORS)
    run_id = await _write_membership(stack, kafka_bootstrap, "partner-5001", "partner-visitors")
    [letter] = await _dead_letters(stack, kafka_bootstrap, expect=1)
    assert letter["dlq.error"] == "PolicyRefused"
    assert "data source 'partner-visitors' carries the PII export restriction" in letter["dlq.reason"]
    await eventually(lambda: _blocked_reports(stack, run_id), until=bool, timeout=30)
    assert await stack.members("partner-5001") == set()
