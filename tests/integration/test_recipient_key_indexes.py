"""The stored declared keys are indexed only once a data source uses them (schemas/sql/029, issue 18's write cost):
each index is an entry per recipient written. Matching a declared ID still probes an index-only path."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from services.reconcile.catalog import CatalogDataSource, upsert_data_source
from shared.migrations import MIGRATIONS_DIR, migrate

pytestmark = pytest.mark.integration

_INDEXES = """SELECT indexname, indexdef FROM pg_indexes
               WHERE tablename = 'recipient' AND (indexname LIKE 'recipient_key_%' OR indexname LIKE '%_without_%')"""


async def _key_indexes(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["indexname"]: r["indexdef"] for r in await conn.fetch(_INDEXES)}


async def test_a_new_database_indexes_a_stored_key_when_a_data_source_uses_it(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        assert await _key_indexes(conn) == {}
        await conn.execute("INSERT INTO recipient (recipient_id, email) VALUES (1, ' A@Example.com ')")
        hashed = CatalogDataSource(
            name="crm-hashed", dpid=7, id_type="declared", reconciliation_key="email", key_transform="sha256"
        )
        await upsert_data_source(conn, hashed)
        indexes = await _key_indexes(conn)
        assert set(indexes) == {"recipient_key_email_sha256", "recipient_without_email_sha256"}
        assert "(key_email_sha256) INCLUDE (recipient_id)" in indexes["recipient_key_email_sha256"]
        assert "WHERE (key_email_sha256 IS NULL)" in indexes["recipient_without_email_sha256"]
        await upsert_data_source(conn, hashed)  # again: a no-op
        assert await _key_indexes(conn) == indexes
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN SELECT recipient_id FROM recipient WHERE key_email_sha256 = 'x'")
        )
        assert "Index Only Scan using recipient_key_email_sha256" in plan, plan
    finally:
        await conn.close()


async def test_upgrading_keeps_the_indexes_of_the_keys_in_use(database_url: str, tmp_path: Path) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name.split("_", 1)[0]) < 29:
            shutil.copy(path, tmp_path / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, tmp_path)
        assert set(await _key_indexes(conn)) == {
            "recipient_key_email_sha256",
            "recipient_key_crm_id_none",
            "recipient_without_email_sha256",
        }
        await conn.execute(
            """INSERT INTO data_source (name, dpid, id_type, reconciliation_key, key_transform)
               VALUES ('crm', 9, 'declared', 'crm_id', 'none')"""
        )
        assert 29 in await migrate(conn)
        assert set(await _key_indexes(conn)) == {"recipient_key_crm_id_none"}
    finally:
        await conn.close()
