"""Migrations against a real, empty Postgres database."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.ingest.event_ledger import EventLedger
from shared.errors import ConfigError
from shared.ids import declared_key
from shared.messages import SegmentEvent
from shared.migrations import MIGRATIONS_DIR, discover, migrate

pytestmark = pytest.mark.integration

DESIGN_TABLES = {
    "recipient",
    "visitor_link",
    "data_source",
    "shared_audience",
    "list",
    "list_member",
    "run",
    "applied_batch",
    "unmatched_id",
    "exported_member",
}


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_apply_on_empty_database_then_nothing_changes(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await migrate(conn)
        assert applied == [m.version for m in discover()]
        tables = await _tables(conn)
        assert tables >= DESIGN_TABLES
        assert "schema_migrations" in tables
        recorded = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in recorded] == applied

        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for r in results for v in r)
        assert applied == [m.version for m in discover()]
    finally:
        for c in conns:
            await c.close()


async def test_an_edited_applied_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, copy)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, copy)
        first = sorted(copy.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(ConfigError, match="edited"):
            await migrate(conn, copy)
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(database_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, copy)
    (copy / "900_broken.sql").write_text("CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n")
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, copy)
        assert "half_done" not in await _tables(conn)
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = 900") == 0
    finally:
        await conn.close()


def test_badly_named_migration_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1")
    with pytest.raises(ConfigError, match=r"NNN_name\.sql"):
        discover(tmp_path)


async def test_upgrading_keeps_staged_runs_and_stores_the_usual_keys(database_url: str, tmp_path: Path) -> None:
    # A deployment on schema 4 with a run half staged (one ID per row) and recipients already loaded.
    for path in sorted(MIGRATIONS_DIR.glob("00[1-4]_*.sql")):
        shutil.copy(path, tmp_path / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn, tmp_path) == [1, 2, 3, 4]
        await conn.execute(
            "INSERT INTO recipient (recipient_id, email, crm_id) VALUES (1, ' A@Example.com ', 'CRM1'), (2, NULL, NULL)"
        )
        run = "00000000-0000-0000-0000-00000000000a"
        await conn.execute(
            """INSERT INTO publish_stage (run_id, seq, id, is_add) VALUES
               ($1, 0, 'b', true), ($1, 0, 'a', true), ($1, 0, 'gone', false), ($1, 1, 'c', true)""",
            run,
        )
        assert await migrate(conn) == [m.version for m in discover() if m.version > 4]
        staged = await conn.fetch(
            "SELECT seq, adds, removes, adds_n, removes_n, max_id_bytes FROM publish_stage_batch ORDER BY seq"
        )
        assert [tuple(r) for r in staged] == [(0, "a\nb", "gone", 2, 1, 4), (1, "c", "", 1, 0, 1)]
        keys = await conn.fetch(
            "SELECT key_email_sha256 = ab_declared_key(email, 'sha256') AS same, key_crm_id_none FROM recipient "
            "ORDER BY recipient_id"
        )
        assert keys[0]["same"] is True
        assert keys[0]["key_crm_id_none"] == "CRM1"
        assert keys[1]["key_crm_id_none"] is None
    finally:
        await conn.close()


async def test_upgrading_restages_half_staged_full_runs_as_ids(database_url: str, tmp_path: Path) -> None:
    # Schema 5 staged a full run's matched recipients; schema 6 stages the platform's IDs. A run in flight
    # during the upgrade must end with the same members: each recipient comes back as one of its IDs.
    for path in sorted(MIGRATIONS_DIR.glob("00[1-5]_*.sql")):
        shutil.copy(path, tmp_path / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn, tmp_path) == [1, 2, 3, 4, 5]
        await conn.execute(
            """INSERT INTO recipient (recipient_id, email, crm_id) VALUES
               (1, ' A@Example.com ', 'CRM1'), (2, 'b@example.com', NULL), (3, NULL, 'CRM3');
               INSERT INTO visitor_link (ecid, recipient_id) VALUES
               (repeat('1', 38), 1), (repeat('2', 38), 1), (repeat('3', 38), 3);
               INSERT INTO data_source (data_source_id, name, dpid, id_type, reconciliation_key, key_transform)
               VALUES (1, 'visitors', 1, 'ecid', NULL, 'none'), (2, 'emails', 2, 'declared', 'email', 'sha256'),
                      (3, 'crm', 3, 'declared', 'crm_id', 'none')"""
        )
        runs = {
            "00000000-0000-0000-0000-000000000001": (1, "ecid", [1, 3]),
            "00000000-0000-0000-0000-000000000002": (2, "declared", [1, 2]),
            "00000000-0000-0000-0000-000000000003": (3, "declared", [1, 2, 3]),  # 2 has no CRM id any more
        }
        for run_id, (source, id_type, members) in runs.items():
            await conn.execute(
                """INSERT INTO run (run_id, direction, audience_id, mode, state, data_source_id, id_type)
                   VALUES ($1, 'import', 'a' || $2::int, 'full', 'progress', $2, $3)""",
                run_id,
                source,
                id_type,
            )
            await conn.executemany(
                "INSERT INTO import_stage (run_id, recipient_id) VALUES ($1, $2)", [(run_id, m) for m in members]
            )
        assert await migrate(conn) == [m.version for m in discover() if m.version > 5]
        assert "import_stage" not in await _tables(conn)
        staged = {(str(r["run_id"])[-1], r["id"]) for r in await conn.fetch("SELECT run_id, id FROM import_stage_id")}
        email_a = await conn.fetchval("SELECT ab_declared_key(' A@Example.com ', 'sha256')")
        email_b = await conn.fetchval("SELECT ab_declared_key('b@example.com', 'sha256')")
        assert staged == {
            ("1", "1" * 38),  # the smallest of recipient 1's ECIDs
            ("1", "3" * 38),
            ("2", email_a),
            ("2", email_b),
            ("3", "CRM1"),
            ("3", "CRM3"),
        }
    finally:
        await conn.close()


async def test_upgrading_to_one_key_rule_recomputes_the_stored_keys_and_indexes(
    database_url: str, tmp_path: Path
) -> None:
    # A deployment on every schema but 017 and 025: keys stored by the collation's lower() and by a trim that
    # took the letter v for a vertical tab; an expression index made on demand holds the same.
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if not path.name.startswith(("017_", "025_")):
            shutil.copy(path, tmp_path / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, tmp_path)
        values = {1: "ÉVE@Example.org", 2: "vivian@example.dev", 3: "plain@example.com"}
        await conn.executemany(
            "INSERT INTO recipient (recipient_id, email, crm_id) VALUES ($1, $2, $2)", list(values.items())
        )
        await conn.execute("CREATE INDEX recipient_key_email_none ON recipient (ab_declared_key(email, 'none'))")
        assert await conn.fetchval("SELECT key_crm_id_none FROM recipient WHERE recipient_id = 2") == "ivian@example.de"
        assert await migrate(conn) == [17, 25]
        rows = await conn.fetch("SELECT recipient_id, key_email_sha256, key_crm_id_none FROM recipient")
        assert {r["recipient_id"]: r["key_email_sha256"] for r in rows} == {
            i: declared_key(v, "sha256") for i, v in values.items()
        }
        assert {r["recipient_id"]: r["key_crm_id_none"] for r in rows} == values
        # The rebuilt index answers with the new keys (a stale entry would find nobody).
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN SELECT 1 FROM recipient WHERE ab_key(email, 'none') = 'x'")
        )
        assert "recipient_key_email_none" in plan
        found = await conn.fetchval("SELECT recipient_id FROM recipient WHERE ab_key(email, 'none') = $1", values[2])
        assert found == 2
        # The former name computes the same rule on an upgraded database.
        assert await conn.fetchval("SELECT ab_declared_key($1, 'sha256')", values[1]) == declared_key(
            values[1], "sha256"
        )
    finally:
        await conn.close()


async def test_the_former_key_name_follows_the_one_rule_on_a_new_database(database_url: str) -> None:
    # On a new database 023 runs after 017 and defined ab_declared_key again with the collation's lower();
    # 025 makes the former name the same rule as ab_key everywhere.
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        for value in ("ÉVE@Example.org", "vivian@example.dev", " A@Example.com "):
            for transform in ("sha256", "none"):
                old = await conn.fetchval("SELECT ab_declared_key($1, $2)", value, transform)
                assert old == await conn.fetchval("SELECT ab_key($1, $2)", value, transform)
            hashed = await conn.fetchval("SELECT ab_declared_key($1, 'sha256')", value)
            assert hashed == declared_key(value, "sha256")
    finally:
        await conn.close()


async def test_upgrading_to_byte_ordered_ledger_keys_keeps_what_the_ledger_decided(
    database_url: str, tmp_path: Path
) -> None:
    # A deployment on schema 32 whose ledger holds a claimed event; schema 33 changes the keys' collation only.
    for m in discover():
        if m.version <= 32:
            shutil.copy(next(MIGRATIONS_DIR.glob(f"{m.version:03d}_*.sql")), tmp_path)
    conn = await asyncpg.connect(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    ledger = EventLedger(pool, retention_h=24)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        assert (await migrate(conn, tmp_path))[-1] == 32
        first = _ledger_event("ev-1", "add", at)
        async with ledger.claiming([first]) as admitted:
            assert admitted == {"ev-1"}
        assert await migrate(conn) == [m.version for m in discover() if m.version > 32]
        keys = await conn.fetch(
            """SELECT c.relname || '.' || a.attname AS name, coalesce(l.collname, 'default') AS collation
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 LEFT JOIN pg_collation l ON l.oid = a.attcollation
                WHERE c.relname IN ('segment_event_seen', 'segment_member_latest')
                  AND a.attname IN ('event_id', 'segment_id', 'data_source', 'id')"""
        )
        assert {r["name"]: r["collation"] for r in keys} == {
            "segment_event_seen.event_id": "C",
            "segment_member_latest.segment_id": "C",
            "segment_member_latest.data_source": "C",
            "segment_member_latest.id": "C",
        }
        # Decided against what was claimed before the upgrade: the repeat and the older change are ignored.
        repeat, older, newer = (
            _ledger_event("ev-1", "add", at),
            _ledger_event("ev-0", "remove", at - timedelta(minutes=1)),
            _ledger_event("ev-2", "remove", at + timedelta(minutes=1)),
        )
        async with ledger.claiming([repeat, older]) as admitted:
            assert admitted == set()
        async with ledger.claiming([newer]) as admitted:
            assert admitted == {"ev-2"}
    finally:
        await pool.close()
        await conn.close()


def _ledger_event(event_id: str, op: str, at: datetime) -> SegmentEvent:
    return SegmentEvent.model_validate(
        {
            "event_id": event_id,
            "segment_id": "7101",
            "id_type": "ecid",
            "data_source": "visitors",
            "id": "1" * 38,
            "op": op,
            "occurred_at": at,
        }
    )
