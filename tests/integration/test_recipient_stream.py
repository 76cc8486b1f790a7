"""reconcile's campaign streams against real Postgres: recipient changes in source order, clicks that re-match
the IDs they concern, deletes that withdraw what was shared, consent left out of exports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from services.reconcile import consent
from services.reconcile.export_diff import CURRENT_IDS, OPTED_OUT, diff_sql, load_source
from services.reconcile.recipient_changes import apply_changes
from services.reconcile.visitor_links import apply_links, link_all_pending
from shared.messages import RecipientChange, VisitorLink, decode
from tests.fixtures.bridge_db import Campaign, add_export_run, add_import_audience, ecid_of, hashed_email_of

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def upsert(recipient_id: int, position: int, email: str | None = None, **fields: Any) -> RecipientChange:
    return RecipientChange(recipient_id=recipient_id, op="upsert", position=position, email=email, **fields)


def delete(recipient_id: int, position: int) -> RecipientChange:
    return RecipientChange(recipient_id=recipient_id, op="delete", position=position)


def sha(email: str) -> str:
    import hashlib

    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


async def _recipient(campaign: Campaign, recipient_id: int) -> Any:
    async with campaign.pool.acquire() as conn:
        return await conn.fetchrow(
            "SELECT email, key_email_sha256, opted_out FROM recipient WHERE recipient_id = $1", recipient_id
        )


async def _unmatched(campaign: Campaign, audience_id: str, id_type: str, ids: list[str]) -> None:
    async with campaign.pool.acquire() as conn:
        await conn.executemany(
            """INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id) VALUES ($1, $2, $3, $4, $5)""",
            [
                (audience_id, id_type, i, "unknown_ecid" if id_type == "ecid" else "unknown_declared_id", uuid.uuid4())
                for i in ids
            ],
        )


async def _members(campaign: Campaign, audience_id: str) -> set[int]:
    async with campaign.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT lm.recipient_id FROM list_member lm JOIN shared_audience sa USING (list_id)
                WHERE sa.audience_id = $1""",
            audience_id,
        )
    return {r["recipient_id"] for r in rows}


async def test_newer_changes_win_whatever_the_order(campaign: Campaign) -> None:
    async with campaign.pool.acquire() as conn:
        counts = await apply_changes(conn, [upsert(5000, 10, "new@example.com"), upsert(5000, 5, "old@example.com")])
        assert counts["upserted"] == 1
        assert counts["stale"] == 1
        # A replay of the older change, or of the same one, changes nothing.
        again = await apply_changes(conn, [upsert(5000, 5, "old@example.com"), upsert(5000, 10, "other@x.org")])
        assert again["upserted"] == 0
        assert again["stale"] == 2
    row = await _recipient(campaign, 5000)
    assert row["email"] == "new@example.com"
    assert row["key_email_sha256"] == sha("new@example.com")


async def test_a_delete_is_not_undone_by_a_late_upsert(campaign: Campaign) -> None:
    async with campaign.pool.acquire() as conn:
        await apply_changes(conn, [upsert(7, 100, "seven@example.com")])
        counts = await apply_changes(conn, [delete(7, 200)])
        assert counts["deleted"] == 1
        assert await conn.fetchval("SELECT count(*) FROM visitor_link WHERE recipient_id = 7") == 0
        late = await apply_changes(conn, [upsert(7, 150, "seven@example.com")])
        assert late["stale"] == 1
        assert await _recipient(campaign, 7) is None
        # A newer upsert brings the recipient back.
        await apply_changes(conn, [upsert(7, 300, "back@example.com")])
    assert (await _recipient(campaign, 7))["email"] == "back@example.com"


async def test_debezium_events_apply_like_native_changes(campaign: Campaign) -> None:
    def event(op: str, before: Any, after: Any, lsn: int, wrapped: bool = False) -> bytes:
        payload = {"before": before, "after": after, "op": op, "source": {"lsn": lsn, "ts_ms": 1764579600000}}
        return orjson.dumps({"schema": {"type": "struct"}, "payload": payload} if wrapped else payload)

    values = [
        event("c", None, {"id": 9001, "email": "cdc@example.com", "opted_out": False, "extra": 1}, 100),
        event("u", None, {"id": 9001, "email": "cdc2@example.com", "opted_out": True}, 200, wrapped=True),
        event("c", None, {"id": 9002, "email": "gone@example.com"}, 300),
        event("d", {"id": 9002, "email": None}, None, 400, wrapped=True),
    ]
    changes = [decode(RecipientChange, v) for v in values]
    async with campaign.pool.acquire() as conn:
        await apply_changes(conn, changes)
        # The same events replayed in reverse order change nothing.
        replay = await apply_changes(conn, list(reversed(changes)))
        assert replay["upserted"] == 0
        assert replay["deleted"] == 0
    row = await _recipient(campaign, 9001)
    assert row["email"] == "cdc2@example.com"
    assert row["opted_out"] is True
    assert await _recipient(campaign, 9002) is None


async def test_a_click_rematches_only_its_unmatched_ecid(campaign: Campaign) -> None:
    await add_import_audience(campaign.pool, "clicks", "visitors", 7001)
    unknown, other = "9" * 38, "8" * 38
    await _unmatched(campaign, "clicks", "ecid", [unknown, other])
    async with campaign.pool.acquire() as conn:
        # The other ECID gets linked behind the stream's back: only the periodic re-match may place it.
        await conn.execute("INSERT INTO visitor_link (ecid, recipient_id) VALUES ($1, 12)", other)
        counts = await apply_links(conn, [VisitorLink(ecid=unknown, recipient_id=11, seen_at=AT)])
        assert counts == {"linked": 1, "pending": 0, "dropped": 0, "rematched": 1, "members_added": 1}
        left = {r["id"] for r in await conn.fetch("SELECT id FROM unmatched_id WHERE audience_id = 'clicks'")}
    assert await _members(campaign, "clicks") == {11}
    assert left == {other}


async def test_a_click_before_its_recipient_waits_then_links(campaign: Campaign) -> None:
    await add_import_audience(campaign.pool, "early", "visitors", 7002)
    ecid = "7" * 38
    await _unmatched(campaign, "early", "ecid", [ecid])
    async with campaign.pool.acquire() as conn:
        counts = await apply_links(conn, [VisitorLink(ecid=ecid, recipient_id=6000, seen_at=AT)] * 2)
        assert counts["pending"] == 1
        assert counts["linked"] == 0
        applied = await apply_changes(conn, [upsert(6000, 1, "late@example.com")])
        assert applied["linked"] == 1
        assert applied["members_added"] == 1
        assert await conn.fetchval("SELECT count(*) FROM visitor_link_pending") == 0
        # A deleted recipient's clicks are dropped.
        await apply_changes(conn, [delete(6001, 1)])
        dropped = await apply_links(conn, [VisitorLink(ecid=ecid, recipient_id=6001, seen_at=AT)])
        assert dropped["dropped"] == 1
        assert (await link_all_pending(conn))["linked"] == 0
    assert await _members(campaign, "early") == {6000}


async def test_a_new_email_matches_its_unmatched_declared_id(campaign: Campaign) -> None:
    await add_import_audience(campaign.pool, "hashed", "hashed-emails", 7003)
    await _unmatched(campaign, "hashed", "declared", [sha("fresh@example.com")])
    async with campaign.pool.acquire() as conn:
        counts = await apply_changes(conn, [upsert(3, 1, "Fresh@Example.com ")])
    assert counts["rematched"] == 1
    assert await _members(campaign, "hashed") == {3}


async def _export_setup(campaign: Campaign, audience_id: str, data_source: str, mode: str) -> int:
    await add_export_run(campaign.pool, audience_id=audience_id, data_source=data_source, mode=mode)
    async with campaign.pool.acquire() as conn:
        list_id = int(await conn.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = $1", audience_id))
        await conn.executemany(
            "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)", [(list_id, r) for r in (1, 2, 3)]
        )
    return list_id


async def _diff(
    campaign: Campaign, list_id: int, audience_id: str, data_source: str, mode: str
) -> dict[bool, set[str]]:
    out: dict[bool, set[str]] = {True: set(), False: set()}
    async with campaign.pool.acquire() as conn:
        source = await load_source(conn, data_source)
        for query in diff_sql(CURRENT_IDS[source.kind], mode):
            args = (list_id, audience_id) if query.by_audience else (list_id,)
            out[query.is_add] |= {r[0] for r in await conn.fetch(query.sql, *args)}
    return out


async def test_a_deleted_recipient_is_withdrawn_even_from_an_append_audience(campaign: Campaign) -> None:
    list_id = await _export_setup(campaign, "ab-append", "hashed-emails", "append")
    async with campaign.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO exported_member (audience_id, id, run_id) VALUES ('ab-append', $1, $2)",
            [(hashed_email_of(r), uuid.uuid4()) for r in (1, 2, 3)],
        )
        assert (await _diff(campaign, list_id, "ab-append", "hashed-emails", "append"))[False] == set()
        counts = await apply_changes(conn, [delete(2, 1)])
        assert counts["withdrawn"] == 1
        assert await conn.fetchval("SELECT count(*) FROM list_member WHERE recipient_id = 2") == 0
    assert (await _diff(campaign, list_id, "ab-append", "hashed-emails", "append"))[False] == {hashed_email_of(2)}


async def test_opted_out_recipients_leave_a_mirror_and_are_counted_apart(campaign: Campaign) -> None:
    list_id = await _export_setup(campaign, "ab-mirror", "visitors", "mirror")
    async with campaign.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO exported_member (audience_id, id, run_id) VALUES ('ab-mirror', $1, $2)",
            [(ecid_of(r), uuid.uuid4()) for r in (1, 3)],
        )
        await apply_changes(conn, [upsert(3, 1, "three@example.com", opted_out=True)])
        diff = await _diff(campaign, list_id, "ab-mirror", "visitors", "mirror")
        assert diff[False] == {ecid_of(3)}
        assert diff[True] == {ecid_of(2), ecid_of(2, 1)}
        assert await conn.fetchval(OPTED_OUT, list_id) == 1


async def test_import_opted_out_off_keeps_them_out_of_import_lists(campaign: Campaign, database_url: str) -> None:
    await add_import_audience(campaign.pool, "consenting", "visitors", 7004)
    ecid = "6" * 38
    await _unmatched(campaign, "consenting", "ecid", [ecid])
    conn = await asyncpg.connect(database_url, server_settings=consent.session_settings(import_opted_out=False))
    try:
        async with campaign.pool.acquire() as other:
            list_id = await other.fetchval("SELECT list_id FROM shared_audience WHERE audience_id = 'consenting'")
            await other.execute("INSERT INTO list_member (list_id, recipient_id) VALUES ($1, 21)", list_id)
        # Opting out takes recipient 21 off the import list; an opted-out recipient's click adds nobody.
        counts = await apply_changes(
            conn, [upsert(21, 1, "a@example.com", opted_out=True), upsert(22, 1, "b@example.com", opted_out=True)]
        )
        assert counts["left_import_lists"] == 1
        links = await apply_links(conn, [VisitorLink(ecid=ecid, recipient_id=22, seen_at=AT)])
        assert links["rematched"] == 1
        assert links["members_added"] == 0
    finally:
        await conn.close()
    assert await _members(campaign, "consenting") == set()
    # The default (a session without the setting) admits them.
    async with campaign.pool.acquire() as conn2:
        await apply_changes(conn2, [upsert(23, 1, "c@example.com", opted_out=True)])
        await _unmatched(campaign, "consenting", "ecid", ["5" * 38])
        await apply_links(conn2, [VisitorLink(ecid="5" * 38, recipient_id=23, seen_at=AT)])
    assert await _members(campaign, "consenting") == {23}
