"""reconcile's import side against real Postgres: set-based matching, exactly-once, full runs, guards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.reconcile.importing import Importer, ImportGuards
from shared.kafka import Producer
from shared.messages import AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.settings import KafkaSettings
from shared.status import StatusReporter
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def importer(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Importer]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    yield Importer(
        campaign.pool,
        StatusReporter(producer, service="test", topic_prefix=topic_prefix),
        ImportGuards(max_removal_share=0.5, min_list_size=10),
    )
    await producer.stop()


def _batch(
    audience: str,
    run: uuid.UUID,
    seq: int,
    *,
    mode: str = "delta",
    last: bool = True,
    adds: list[str] | None = None,
    removes: list[str] | None = None,
    id_type: str = "ecid",
    data_source: str = "visitors",
) -> AudienceMembership:
    return AudienceMembership.model_validate(
        {
            "run_id": run,
            "seq": seq,
            "last": last,
            "audience_id": audience,
            "data_source": data_source,
            "id_type": id_type,
            "mode": mode,
            "adds": adds or [],
            "removes": removes or [],
        }
    )


async def _members(campaign: Campaign, audience: str) -> set[int]:
    rows = await campaign.pool.fetch(
        """SELECT lm.recipient_id FROM list_member lm JOIN shared_audience sa USING (list_id)
            WHERE sa.audience_id = $1""",
        audience,
    )
    return {r["recipient_id"] for r in rows}


async def _unmatched(campaign: Campaign, audience: str) -> dict[str, str]:
    rows = await campaign.pool.fetch("SELECT id, reason FROM unmatched_id WHERE audience_id = $1", audience)
    return {r["id"]: r["reason"] for r in rows}


async def test_delta_by_ecid_matches_counts_and_keeps_unmatched(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-visitors", "visitors", 5001)
    unknown, malformed = "9" * 38, "1" * 37
    run = uuid.uuid4()
    outcome = await importer.apply(
        _batch(
            "seg-visitors",
            run,
            0,
            adds=[ecid_of(1), ecid_of(2), ecid_of(2, 1), ecid_of(3), unknown, malformed],
        )
    )
    assert outcome is not None
    assert outcome.state == "succeeded"
    assert await _members(campaign, "seg-visitors") == {1, 2, 3}
    assert await _unmatched(campaign, "seg-visitors") == {
        unknown: "unknown_ecid",
        malformed: "invalid_format",
    }
    assert outcome.counts == {
        "received": 6,
        "invalid": 1,
        "matched": 4,
        "unmatched": 1,
        "added": 3,
        "removed": 0,
    }
    assert outcome.match_rate == {"ecid": 0.8}

    removal = await importer.apply(_batch("seg-visitors", uuid.uuid4(), 0, removes=[ecid_of(3), unknown]))
    assert removal is not None
    assert removal.counts["removed"] == 1
    assert await _members(campaign, "seg-visitors") == {1, 2}
    assert await _unmatched(campaign, "seg-visitors") == {malformed: "invalid_format"}


async def test_a_redelivered_batch_changes_nothing(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-1", "visitors", 5001)
    run = uuid.uuid4()
    batch = _batch("seg-1", run, 0, adds=[ecid_of(i) for i in range(1, 11)])
    first = await importer.apply(batch)
    again = await importer.apply(batch)
    assert first is not None
    assert again is not None
    assert again.counts == first.counts  # the final state is re-reported, not re-applied
    assert await campaign.pool.fetchval("SELECT count(*) FROM applied_batch WHERE run_id = $1", run) == 1
    assert len(await _members(campaign, "seg-1")) == 10


async def test_full_run_replaces_the_list_only_when_complete(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-full", "hashed-emails", 5002)
    first_run = uuid.uuid4()
    assert (
        await importer.apply(
            _batch(
                "seg-full",
                first_run,
                0,
                mode="full",
                last=False,
                id_type="declared",
                data_source="hashed-emails",
                adds=[hashed_email_of(i) for i in range(1, 21)],
            )
        )
        is None
    )
    assert await _members(campaign, "seg-full") == set()  # staged, not applied until the last batch
    done = await importer.apply(
        _batch(
            "seg-full",
            first_run,
            1,
            mode="full",
            id_type="declared",
            data_source="hashed-emails",
            adds=[hashed_email_of(i) for i in range(21, 31)] + ["f" * 64],
        )
    )
    assert done is not None
    assert done.state == "succeeded"
    assert await _members(campaign, "seg-full") == set(range(1, 31))
    assert done.counts["added"] == 30
    assert await _unmatched(campaign, "seg-full") == {"f" * 64: "unknown_declared_id"}

    # The next snapshot: 1..25 stay, 26..30 left, 31..35 joined; the stale unmatched ID is gone.
    second = await importer.apply(
        _batch(
            "seg-full",
            uuid.uuid4(),
            0,
            mode="full",
            id_type="declared",
            data_source="hashed-emails",
            adds=[hashed_email_of(i) for i in range(1, 36) if not 26 <= i <= 30],
        )
    )
    assert second is not None
    assert second.state == "succeeded"
    assert (second.counts["added"], second.counts["removed"]) == (5, 5)
    assert await _members(campaign, "seg-full") == set(range(1, 26)) | set(range(31, 36))
    assert await _unmatched(campaign, "seg-full") == {}


async def test_empty_and_mass_removal_snapshots_are_held_back(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-g", "crm-ids", 5003)
    seed = await importer.apply(
        _batch(
            "seg-g",
            uuid.uuid4(),
            0,
            mode="full",
            id_type="declared",
            data_source="crm-ids",
            adds=[f"CRM{i:06d}" for i in range(1, 41)],
        )
    )
    assert seed is not None
    assert seed.state == "succeeded"

    empty = await importer.apply(
        _batch(
            "seg-g",
            uuid.uuid4(),
            0,
            mode="full",
            id_type="declared",
            data_source="crm-ids",
            adds=["CRM999999"],
        )
    )
    assert empty is not None
    assert empty.state == "blocked"
    assert "empty" in (empty.reason or "")

    mass = await importer.apply(
        _batch(
            "seg-g",
            uuid.uuid4(),
            0,
            mode="full",
            id_type="declared",
            data_source="crm-ids",
            adds=[f"CRM{i:06d}" for i in range(1, 11)],
        )
    )
    assert mass is not None
    assert mass.state == "blocked"
    assert "30 of 40" in (mass.reason or "")
    assert await _members(campaign, "seg-g") == set(range(1, 41))
