"""Membership follows every ID (services/reconcile/member_ids.py) against real Postgres.

A recipient may hold several ECIDs. A list fed by ECIDs records which of them put each member there, so a
delta removing one keeps the member while another is still in the segment: through deltas, full snapshots,
re-matching and releases. In the campaign of tests/fixtures/bridge_db.py, recipient 2 holds two ECIDs.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncpg.connection import LoggedQuery
from prometheus_client import CollectorRegistry

from services.reconcile.importing import Importer, ImportGuards
from services.reconcile.member_ids import add_members, ensure_member_adds
from services.reconcile.rematch import rematch
from shared.kafka import Producer
from shared.metrics import RuntimeMetrics
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, hashed_email_of
from tests.fixtures.import_batches import membership_batch

pytestmark = pytest.mark.integration

AUDIENCE = "seg-ids"
E2, E2B = ecid_of(2), ecid_of(2, 1)  # recipient 2's two browsers
_MEMBER_ADDS_COLUMNS = ("list_id", "recipient_id", "id", "tracked")


@pytest_asyncio.fixture
async def importer(campaign: Campaign, kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Importer]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    reporter = RunReporter(producer, service="test", topic_prefix=topic_prefix, registry=CollectorRegistry())
    await add_import_audience(campaign.pool, AUDIENCE, "visitors", 5201)
    # No guard in the way: these tests shrink small lists on purpose.
    yield Importer(campaign.pool, reporter, ImportGuards(max_removal_share=1.0, min_list_size=1000))
    await producer.stop()


async def _apply(
    importer: Importer,
    *,
    mode: str = "delta",
    adds: list[str] | None = None,
    removes: list[str] | None = None,
    audience: str = AUDIENCE,
    data_source: str = "visitors",
    id_type: str = "ecid",
) -> RunOutcome:
    batch = membership_batch(
        audience, uuid.uuid4(), 0, mode=mode, adds=adds, removes=removes, id_type=id_type, data_source=data_source
    )
    outcome = await importer.apply(batch)
    assert outcome is not None
    assert outcome.state == "succeeded", outcome
    return outcome


async def _held(campaign: Campaign, audience: str = AUDIENCE) -> dict[int, set[str] | None]:
    """Each member of the audience's list, with the IDs recorded as holding it (None: none recorded)."""
    rows = await campaign.pool.fetch(
        """SELECT lm.recipient_id, lm.platform_ids FROM list_member lm JOIN shared_audience sa USING (list_id)
            WHERE sa.audience_id = $1""",
        audience,
    )
    return {r["recipient_id"]: None if r["platform_ids"] is None else set(r["platform_ids"]) for r in rows}


def _changes(outcome: RunOutcome) -> tuple[int, int, int]:
    return outcome.count("added"), outcome.count("removed"), outcome.count("kept_by_other_ids")


async def test_a_delta_removing_one_of_two_ecids_keeps_the_recipient(campaign: Campaign, importer: Importer) -> None:
    assert _changes(await _apply(importer, adds=[E2, E2B, ecid_of(3)])) == (2, 0, 0)
    assert await _held(campaign) == {2: {E2, E2B}, 3: {ecid_of(3)}}

    # One of recipient 2's browsers leaves the segment: the other still holds them (a partial removal, counted).
    partial = await _apply(importer, removes=[E2])
    assert _changes(partial) == (0, 0, 1)
    assert await _held(campaign) == {2: {E2B}, 3: {ecid_of(3)}}

    # The second one leaves too: nothing holds them any more.
    gone = await _apply(importer, removes=[E2B])
    assert _changes(gone) == (0, 1, 0)
    assert await _held(campaign) == {3: {ecid_of(3)}}


async def test_a_full_snapshot_records_every_id_then_deltas_follow_them(campaign: Campaign, importer: Importer) -> None:
    first = await _apply(importer, mode="full", adds=[ecid_of(1), E2, E2B, ecid_of(3)])
    assert _changes(first) == (3, 0, 0)
    assert await _held(campaign) == {1: {ecid_of(1)}, 2: {E2, E2B}, 3: {ecid_of(3)}}

    assert _changes(await _apply(importer, removes=[E2B])) == (0, 0, 1)
    assert await _held(campaign) == {1: {ecid_of(1)}, 2: {E2}, 3: {ecid_of(3)}}
    assert _changes(await _apply(importer, removes=[E2])) == (0, 1, 0)
    assert set(await _held(campaign)) == {1, 3}


async def test_a_full_snapshot_sets_each_members_ids_exactly(campaign: Campaign, importer: Importer) -> None:
    await _apply(importer, mode="full", adds=[E2, ecid_of(3)])
    # A delta adds recipient 2's second browser; the next snapshot names only that one: it is all that holds them.
    assert _changes(await _apply(importer, adds=[E2B])) == (0, 0, 0)
    assert await _held(campaign) == {2: {E2, E2B}, 3: {ecid_of(3)}}
    snapshot = await _apply(importer, mode="full", adds=[E2B, ecid_of(3), ecid_of(4)])
    # Recipient 2 stayed although one of their IDs left the segment.
    assert _changes(snapshot) == (1, 0, 1)
    assert await _held(campaign) == {2: {E2B}, 3: {ecid_of(3)}, 4: {ecid_of(4)}}
    # So removing the ID that left (again) is no partial removal: it removes them.
    assert _changes(await _apply(importer, removes=[E2B])) == (0, 1, 0)
    assert set(await _held(campaign)) == {3, 4}


async def test_a_steady_snapshot_rewrites_only_the_members_whose_ids_changed(
    campaign: Campaign, importer: Importer
) -> None:
    e3b = ecid_of(3, 1)  # recipient 3's second browser
    await campaign.pool.execute("INSERT INTO visitor_link (ecid, recipient_id) VALUES ($1, 3)", e3b)
    await _apply(importer, mode="full", adds=[ecid_of(1), E2, E2B, ecid_of(3), ecid_of(4)])
    # Recipients 1, 2 (both IDs) and 4 as before; 3 switched browsers: it stays, held by the new one only.
    snapshot = await _apply(importer, mode="full", adds=[ecid_of(1), E2B, E2, e3b, ecid_of(4)])
    assert _changes(snapshot) == (0, 0, 1)
    assert await _held(campaign) == {1: {ecid_of(1)}, 2: {E2, E2B}, 3: {e3b}, 4: {ecid_of(4)}}

    async def versions() -> dict[int, str]:
        rows = await campaign.pool.fetch("SELECT recipient_id, xmin::text AS version FROM list_member")
        return {r["recipient_id"]: r["version"] for r in rows}

    # The same snapshot again changes nothing, and rewrites no row.
    before = await versions()
    assert _changes(await _apply(importer, mode="full", adds=[ecid_of(1), E2B, E2, e3b, ecid_of(4)])) == (0, 0, 0)
    assert await versions() == before


async def test_an_id_no_longer_linked_to_its_recipient_holds_them_no_more(
    campaign: Campaign, importer: Importer
) -> None:
    await _apply(importer, adds=[E2, E2B])
    # The campaign unlinks one browser (a shared device cleaned up): it no longer holds recipient 2.
    await campaign.pool.execute("DELETE FROM visitor_link WHERE ecid = $1", E2B)
    assert _changes(await _apply(importer, removes=[E2])) == (0, 1, 0)
    assert await _held(campaign) == {}


async def test_an_ecid_shared_by_two_recipients_leaves_only_the_one_it_alone_held(
    campaign: Campaign, importer: Importer
) -> None:
    shared = ecid_of(2, 1)  # recipient 2's second browser, also recipient 5's
    await campaign.pool.execute("INSERT INTO visitor_link (ecid, recipient_id) VALUES ($1, 5)", shared)
    assert _changes(await _apply(importer, adds=[E2, shared])) == (2, 0, 0)
    assert await _held(campaign) == {2: {E2, shared}, 5: {shared}}
    assert _changes(await _apply(importer, removes=[shared])) == (0, 1, 1)
    assert await _held(campaign) == {2: {E2}}


async def test_members_with_no_record_leave_as_they_always_did(campaign: Campaign, importer: Importer) -> None:
    await _apply(importer, adds=[E2, E2B])
    # A member from before the record existed (or added by another writer): what holds them is not known.
    await campaign.pool.execute("UPDATE list_member SET platform_ids = NULL")
    assert _changes(await _apply(importer, adds=[E2B])) == (0, 0, 0)
    assert await _held(campaign) == {2: None}  # an add does not pretend to know the rest
    assert _changes(await _apply(importer, removes=[E2])) == (0, 1, 0)
    # The next full snapshot records them again.
    await _apply(importer, mode="full", adds=[E2, E2B])
    assert await _held(campaign) == {2: {E2, E2B}}


async def test_declared_lists_record_nothing_and_remove_by_the_one_key(campaign: Campaign, importer: Importer) -> None:
    await add_import_audience(campaign.pool, "seg-mails", "hashed-emails", 5202)
    declared = functools.partial(_apply, audience="seg-mails", data_source="hashed-emails", id_type="declared")
    await declared(importer, mode="full", adds=[hashed_email_of(i) for i in (1, 2, 3)])
    assert await _held(campaign, "seg-mails") == {1: None, 2: None, 3: None}
    assert _changes(await declared(importer, removes=[hashed_email_of(2)])) == (0, 1, 0)
    assert set(await _held(campaign, "seg-mails")) == {1, 3}


async def test_rematched_ecids_join_the_ids_holding_their_recipient(campaign: Campaign, importer: Importer) -> None:
    late, later = "6" * 38, "7" * 38
    first = await _apply(importer, mode="full", adds=[E2, late, later])
    assert (first.count("matched"), first.count("unmatched")) == (1, 2)
    # Recipient 2 clicks from a third browser, recipient 9 from their second: both were in the segment already.
    await campaign.pool.executemany(
        "INSERT INTO visitor_link (ecid, recipient_id) VALUES ($1, $2)", [(late, 2), (later, 9)]
    )
    async with campaign.pool.acquire() as conn:
        assert await rematch(conn) == {"matched": 2, "added": 1}
    assert await _held(campaign) == {2: {E2, late}, 9: {later}}
    # Recipient 2's first browser leaves: the re-matched one still holds them.
    assert _changes(await _apply(importer, removes=[E2])) == (0, 0, 1)
    assert await _held(campaign) == {2: {late}, 9: {later}}


async def test_new_members_join_in_one_statement_and_members_there_gain_their_new_ids(
    campaign: Campaign, importer: Importer
) -> None:
    """The merge of IDs into members already there runs only when the insert skipped one: for a stream of new
    members it probed every member for nothing (as long as the insert took, longer once a list outgrew its
    statistics)."""
    list_id = await campaign.pool.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = $1", AUDIENCE)

    async def add(rows: list[tuple[int, str]]) -> tuple[int, list[str]]:
        statements: list[str] = []
        async with campaign.pool.acquire() as conn, conn.transaction():
            await ensure_member_adds(conn)
            await conn.copy_records_to_table(
                "member_adds", records=[(list_id, r, i, True) for r, i in rows], columns=_MEMBER_ADDS_COLUMNS
            )

            def log(record: LoggedQuery) -> None:
                statements.append(record.query)

            conn.add_query_logger(log)
            try:
                added = await add_members(conn)
            finally:
                conn.remove_query_logger(log)  # the connection goes back to the pool
        return added, [s for s in statements if s.lstrip().startswith("UPDATE list_member")]

    added, merges = await add([(1, ecid_of(1)), (2, E2), (3, ecid_of(3))])
    assert (added, merges) == (3, [])  # all new: no merge
    assert await _held(campaign) == {1: {ecid_of(1)}, 2: {E2}, 3: {ecid_of(3)}}
    added, merges = await add([(2, E2B), (4, ecid_of(4))])  # recipient 2 is there: its second browser joins it
    assert (added, len(merges)) == (1, 1)
    assert await _held(campaign) == {1: {ecid_of(1)}, 2: {E2, E2B}, 3: {ecid_of(3)}, 4: {ecid_of(4)}}
