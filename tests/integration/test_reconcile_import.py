"""reconcile's import side against real Postgres: set-based matching, exactly-once, full runs, guards."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from services.reconcile.importing import Importer
from shared.errors import TransientError
from shared.kafka import Delivery, ensure_topics
from shared.messages import AudienceMembership, AudienceSyncStatus
from shared.runs.outcome import RunOutcome
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.import_batches import list_members as _members
from tests.fixtures.import_batches import membership_batch as _batch
from tests.fixtures.import_batches import unmatched_ids as _unmatched
from tests.helpers import eventually, read_topic

pytestmark = pytest.mark.integration


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
        "kept_by_other_ids": 0,
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


async def test_a_full_snapshot_is_staged_as_ids_and_matched_once_when_complete(
    campaign: Campaign, importer: Importer
) -> None:
    await add_import_audience(campaign.pool, "seg-s", "visitors", 5004)
    run = uuid.uuid4()
    unknown = "9" * 38
    # Batch 0 names recipient 2 by two ECIDs (seed_campaign links both) and an unknown ID; batch 1 repeats
    # one of them and the unknown one: IDs are counted once per snapshot, not once per line or batch.
    first = [ecid_of(1), ecid_of(2), ecid_of(2, 1), unknown, "12345"]
    assert await importer.apply(_batch("seg-s", run, 0, mode="full", last=False, adds=first)) is None
    staged = await campaign.pool.fetch("SELECT id FROM import_stage_id WHERE run_id = $1", run)
    # As they came (the invalid one is kept aside at once), matched only when the run ends.
    assert sorted(r["id"] for r in staged) == sorted(first[:4])
    # A row per batch, its IDs as one array: the run's end reads and deletes a row per batch, not per ID.
    batches = await campaign.pool.fetch("SELECT seq, ids FROM import_stage_batch WHERE run_id = $1", run)
    assert [(r["seq"], sorted(r["ids"])) for r in batches] == [(0, sorted(first[:4]))]
    assert await _unmatched(campaign, "seg-s") == {"12345": "invalid_format"}
    assert await _members(campaign, "seg-s") == set()

    done = await importer.apply(_batch("seg-s", run, 1, mode="full", adds=[ecid_of(2), ecid_of(3), unknown]))
    assert done is not None
    assert done.state == "succeeded"
    assert done.counts == {
        "received": 8,
        "invalid": 1,
        "matched": 4,  # ecid_of(1), ecid_of(2), ecid_of(2, 1), ecid_of(3)
        "unmatched": 1,
        "added": 3,
        "removed": 0,
        "kept_by_other_ids": 0,
    }
    assert await _members(campaign, "seg-s") == {1, 2, 3}
    assert await _unmatched(campaign, "seg-s") == {"12345": "invalid_format", unknown: "unknown_ecid"}
    assert await campaign.pool.fetchval("SELECT count(*) FROM import_stage_id WHERE run_id = $1", run) == 0


def _delivery(batch: AudienceMembership, offset: int) -> Delivery[AudienceMembership]:
    return Delivery(batch, "audience-membership", 0, offset, None, ())


async def test_a_poll_applies_audiences_side_by_side_and_each_in_order(
    campaign: Campaign, importer: Importer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # handle() reports each run's outcome on the status topic.
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, [f"{topic_prefix}audience-sync-status"])
    for audience, segment in (("seg-p1", 5101), ("seg-p2", 5102), ("seg-p3", 5103)):
        await add_import_audience(campaign.pool, audience, "visitors", segment)
    full, delta = uuid.uuid4(), uuid.uuid4()
    poll = [
        _batch("seg-p1", full, 0, mode="full", last=False, adds=[ecid_of(i) for i in range(1, 6)]),
        _batch("seg-p2", delta, 0, last=False, adds=[ecid_of(i) for i in range(10, 13)]),
        _batch("seg-p1", full, 1, mode="full", adds=[ecid_of(i) for i in range(6, 9)]),
        _batch("seg-p2", delta, 1, removes=[ecid_of(10)]),  # after its add: order within an audience holds
        _batch("seg-p3", uuid.uuid4(), 0, id_type="declared", adds=[ecid_of(1)]),  # wrong type: rejected alone
    ]
    # Both audiences' work overlaps: each run's transaction waits here until the other's has begun.
    started = {"seg-p1": asyncio.Event(), "seg-p2": asyncio.Event()}
    apply = importer.apply

    async def meeting(batch: AudienceMembership) -> RunOutcome | None:
        if batch.audience_id in started and batch.seq == 0:
            started[batch.audience_id].set()
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 10)
        return await apply(batch)

    importer.apply = meeting  # type: ignore[method-assign]
    rejected = await importer.handle([_delivery(b, n) for n, b in enumerate(poll)])
    assert [r.delivery.offset for r in rejected] == [4]
    assert await _members(campaign, "seg-p1") == set(range(1, 9))
    assert await _members(campaign, "seg-p2") == {11, 12}


async def test_a_failing_audience_fails_the_poll_with_its_own_error(campaign: Campaign, importer: Importer) -> None:
    for audience, segment in (("seg-q1", 5111), ("seg-q2", 5112)):
        await add_import_audience(campaign.pool, audience, "visitors", segment)
    apply = importer.apply

    async def flaky(batch: AudienceMembership) -> RunOutcome | None:
        if batch.audience_id == "seg-q2":
            raise TransientError("database unavailable", audience=batch.audience_id)
        return await apply(batch)

    importer.apply = flaky  # type: ignore[method-assign]
    poll = [
        _batch("seg-q1", uuid.uuid4(), 0, adds=[ecid_of(1)]),
        _batch("seg-q2", uuid.uuid4(), 0, adds=[ecid_of(2)]),
    ]
    # Not an ExceptionGroup: the consumer retries or dead-letters by the error's own type.
    with pytest.raises(TransientError, match="database unavailable"):
        await importer.handle([_delivery(b, n) for n, b in enumerate(poll)])


async def test_a_member_added_meanwhile_makes_the_snapshot_retry_whole(
    campaign: Campaign, importer: Importer, database_url: str
) -> None:
    """The snapshot adds only what the list lacks, with a plain insert: a member another transaction adds
    meanwhile (re-matching, the campaign) fails it on the key. That is a transient error, so the poll is
    retried; nothing of the first attempt stays, the second one applies."""
    await add_import_audience(campaign.pool, "seg-race", "visitors", 5005)
    list_id = await campaign.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'seg-race'")
    run = uuid.uuid4()
    batch = _batch("seg-race", run, 0, mode="full", adds=[ecid_of(1), ecid_of(3)])
    other = await asyncpg.connect(database_url)
    try:
        adding = other.transaction()
        await adding.start()
        await other.execute("INSERT INTO list_member (list_id, recipient_id) VALUES ($1, 3)", list_id)
        applying = asyncio.create_task(importer.apply(batch))
        # The snapshot's insert waits for the other transaction's row before it can tell.
        await eventually(
            lambda: campaign.pool.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%list_member%'"""
            ),
            until=lambda waiting: waiting == 1,
            timeout=10,
        )
        await adding.commit()
        with pytest.raises(TransientError):
            await asyncio.wait_for(applying, 10)
    finally:
        await other.close()
    assert await campaign.pool.fetchval("SELECT count(*) FROM applied_batch WHERE run_id = $1", run) == 0
    done = await importer.apply(batch)
    assert done is not None
    assert done.state == "succeeded"
    assert done.counts["added"] == 1
    assert await _members(campaign, "seg-race") == {1, 3}


async def test_an_id_unmatched_again_is_kept_with_the_latest_run(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-again", "visitors", 5006)
    unknown, gone = "9" * 38, "8" * 38
    runs = [uuid.uuid4(), uuid.uuid4()]
    for run, extra in zip(runs, ([unknown, gone], [unknown]), strict=True):
        done = await importer.apply(_batch("seg-again", run, 0, mode="full", adds=[ecid_of(1), *extra]))
        assert done is not None
        assert done.state == "succeeded"
        assert done.counts["unmatched"] == len(extra)
    kept = await campaign.pool.fetch("SELECT id, run_id FROM unmatched_id WHERE audience_id = 'seg-again'")
    # Refreshed by the second run (not added twice, not dropped as stale); the one it no longer names is gone.
    assert [(r["id"], r["run_id"]) for r in kept] == [(unknown, runs[1])]


async def test_ids_with_copy_escapes_are_staged_and_kept_as_they_are(campaign: Campaign, importer: Importer) -> None:
    # Valid declared IDs may hold a backslash, COPY's escape character: staged (full) and joined (delta) as
    # text, they must come through unchanged, never read as a TAB or a line break.
    await add_import_audience(campaign.pool, "seg-esc", "crm-ids", 5007)
    odd = ["a\\tb", "c\\\\d", "e\\nf\\", "\\N"]
    done = await importer.apply(
        _batch(
            "seg-esc", uuid.uuid4(), 0, mode="full", id_type="declared", data_source="crm-ids", adds=["CRM000001", *odd]
        )
    )
    assert done is not None
    assert (done.state, done.counts["matched"], done.counts["unmatched"]) == ("succeeded", 1, len(odd))
    assert await _unmatched(campaign, "seg-esc") == dict.fromkeys(odd, "unknown_declared_id")
    assert await campaign.pool.fetchval("SELECT count(*) FROM import_stage_id") == 0
    delta = await importer.apply(
        _batch(
            "seg-esc",
            uuid.uuid4(),
            0,
            id_type="declared",
            data_source="crm-ids",
            adds=["CRM000002", "g\\th"],
            removes=odd[:1],
        )
    )
    assert delta is not None
    assert (delta.counts["matched"], delta.counts["unmatched"]) == (1, 2)
    assert await _members(campaign, "seg-esc") == {1, 2}
    assert await _unmatched(campaign, "seg-esc") == dict.fromkeys([*odd[1:], "g\\th"], "unknown_declared_id")


async def test_handled_runs_are_reported_after_commit_and_counted_once_where_they_end(
    campaign: Campaign, importer: Importer, kafka_bootstrap: str, topic_prefix: str, registry: CollectorRegistry
) -> None:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    status_topic = f"{topic_prefix}audience-sync-status"
    await ensure_topics(settings, [status_topic])
    await add_import_audience(campaign.pool, "seg-st", "visitors", 5009)
    good, bad = uuid.uuid4(), uuid.uuid4()
    poll = [
        _batch("seg-st", good, 0, last=False, adds=[ecid_of(1)]),  # nothing to say yet
        _batch("seg-st", good, 1, adds=[ecid_of(2), "9" * 38]),
        _batch("seg-st", bad, 0, id_type="declared", data_source="hashed-emails", adds=["a"]),
        _batch("seg-st", bad, 1, id_type="declared", data_source="hashed-emails", adds=["b"]),
    ]
    rejected = await importer.handle([_delivery(b, n) for n, b in enumerate(poll)])
    assert [r.delivery.offset for r in rejected] == [2, 3]
    records = await read_topic(kafka_bootstrap, status_topic, expect=3)
    # Keyed by run: in order within a run, the runs' partitions read in any order.
    events: dict[uuid.UUID, list[AudienceSyncStatus]] = {}
    for record in records:
        event = AudienceSyncStatus.model_validate_json(record.value)
        events.setdefault(event.run_id, []).append(event)
    assert {run: [e.state for e in reported] for run, reported in events.items()} == {
        good: ["succeeded"],
        bad: ["failed", "failed"],
    }
    [done] = events[good]
    assert (done.counts.received, done.counts.matched, done.counts.unmatched) == (3, 2, 1)
    assert done.match_rate == {"ecid": round(2 / 3, 4)}
    assert all("id type differs" in (e.reason or "") for e in events[bad])
    # Every batch of the bad run failed: still one failed run.
    assert registry.get_sample_value("ab_runs_total", {"direction": "import", "state": "succeeded"}) == 1
    assert registry.get_sample_value("ab_runs_total", {"direction": "import", "state": "failed"}) == 1
    assert registry.get_sample_value("ab_runs_total", {"direction": "import", "state": "blocked"}) == 0
    # The failed run left nothing behind: its batches' transactions rolled back.
    assert await campaign.pool.fetchval("SELECT count(*) FROM run WHERE run_id = $1", bad) == 0
