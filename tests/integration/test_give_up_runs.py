"""A message given up after HANDLER_MAX_ATTEMPTS ends its run ``failed`` (shared/runs/give_up.py), against real
Postgres and Kafka: an export run (publish's case), a membership batch whose run was never recorded, a run that
ended already (left as it is)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from shared.failures import FailureKind
from shared.kafka import Delivery, Producer, ensure_topics
from shared.kafka.batch_processor import GivenUp
from shared.messages import AudienceExportBatch, AudienceMembership, AudienceSyncStatus, Message
from shared.metrics import RuntimeMetrics
from shared.runs.give_up import fail_runs_given_up
from shared.runs.reporter import RunReporter, export_ends, import_ends
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_export_run
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def reporter(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[tuple[RunReporter, CollectorRegistry]]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}audience-sync-status"])
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    await producer.start()
    registry = CollectorRegistry()
    ends = [*export_ends(), *import_ends()]
    yield RunReporter(producer, service="test", topic_prefix=topic_prefix, registry=registry, ends=ends), registry
    await producer.stop()


def _given_up(message: Message, offset: int, reason: str) -> GivenUp:
    delivery: Delivery[Any] = Delivery(message=message, topic="t", partition=0, offset=offset, key=None, headers=())
    return GivenUp(delivery, FailureKind.UNEXPECTED, KeyError("bug"), reason)


def _export_batch(run_id: uuid.UUID) -> AudienceExportBatch:
    return AudienceExportBatch.model_validate(
        {
            "run_id": run_id,
            "seq": 0,
            "audience_id": "ab-out",
            "data_source": "visitors",
            "dpid": 1001,
            "mode": "append",
            "adds": ["1" * 38],
        }
    )


def _membership(run_id: uuid.UUID) -> AudienceMembership:
    return AudienceMembership.model_validate(
        {
            "run_id": run_id,
            "seq": 3,
            "audience_id": "seg-x",
            "data_source": "visitors",
            "id_type": "ecid",
            "mode": "full",
            "adds": ["1" * 38],
        }
    )


async def test_given_up_messages_end_their_runs_failed_once_with_the_reason(
    campaign: Campaign,
    reporter: tuple[RunReporter, CollectorRegistry],
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    pool = campaign.pool
    export_run = await add_export_run(pool, audience_id="ab-out", data_source="visitors")
    done_run = await add_export_run(pool, audience_id="ab-done", data_source="visitors")
    await pool.execute("UPDATE run SET state = 'succeeded' WHERE run_id = $1", done_run)
    unrecorded = uuid.uuid4()
    status, registry = reporter

    ended = await fail_runs_given_up(
        pool,
        status,
        [
            _given_up(_export_batch(export_run), 1, "unexpected error, given up after 3 attempts (KeyError)"),
            _given_up(_export_batch(export_run), 2, "a second message of the same run"),
            _given_up(_export_batch(done_run), 3, "too late: the run succeeded"),
            _given_up(_membership(unrecorded), 4, "given up before the run was recorded"),
        ],
    )

    assert sorted(o.run_id for o in ended) == sorted([export_run, unrecorded])
    rows = {r["run_id"]: r for r in await pool.fetch("SELECT run_id, direction, state, reason, finished_at FROM run")}
    assert rows[export_run]["state"] == "failed"
    assert rows[export_run]["reason"] == "unexpected error, given up after 3 attempts (KeyError)"
    assert rows[export_run]["finished_at"] is not None
    assert rows[done_run]["state"] == "succeeded"
    assert (rows[unrecorded]["direction"], rows[unrecorded]["state"]) == ("import", "failed")
    records = await read_topic(kafka_bootstrap, f"{topic_prefix}audience-sync-status", expect=2)
    events = {AudienceSyncStatus.model_validate_json(r.value or b"").run_id: r for r in records}
    assert set(events) == {export_run, unrecorded}
    assert registry.get_sample_value("ab_runs_total", {"direction": "export", "state": "failed"}) == 1
    assert registry.get_sample_value("ab_runs_total", {"direction": "import", "state": "failed"}) == 1

    # Given up again (a redelivery before the commit): still failed, counted once.
    await fail_runs_given_up(pool, status, [_given_up(_export_batch(export_run), 1, "again")])
    assert registry.get_sample_value("ab_runs_total", {"direction": "export", "state": "failed"}) == 1
