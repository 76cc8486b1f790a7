"""SQL is parameterised: hostile audience, list and data source names and IDs go through the import and
export paths and the CLI, and come back out exactly as they went in, with every table still there.

Each value is as hostile as the message models let through (quotes, comment markers, ``$1``, ``%s``,
backslashes, bidi overrides, astral characters, the longest allowed). The static check that no statement
is built from such values is ``tests/unit/test_sql_static.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg
import pytest

from services.reconcile.catalog import (
    CatalogDataSource,
    CatalogImportAudience,
    ensure_list,
    upsert_data_source,
    upsert_import_audience,
)
from services.reconcile.exporting import Exporter, export_audience_id
from services.reconcile.importing import Importer, ImportGuards
from shared.errors import PermanentError
from shared.kafka import Producer, ensure_topics
from shared.messages import AudienceExportBatch, AudienceExportRequest, AudienceMembership
from shared.metrics import RuntimeMetrics
from shared.runs.reporter import RunReporter
from shared.settings import KafkaSettings
from tests.fixtures.bridge_db import Campaign, ecid_of
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

HOSTILE_NAMES = [
    "'; DROP TABLE recipient; --",
    "Robert'); DROP TABLE list;--",
    '" OR "1"="1',
    "' OR 1=1 --",
    "$1",
    "%s %n %(x)s",
    "{0} {} {x!r}",
    "\\'; SELECT pg_sleep(10); --",
    "/* comment */ name",
    "Ünïcødé ☃ \U0001d518 \u202eevil\u200b",
    "名前 — ✓",
    "'" * 200,
    "x" * 200,
]
# IDs travel without whitespace or commas; within that, anything.
HOSTILE_IDS = [
    "';DROP/**/TABLE/**/recipient;--",
    "$1",
    "%s",
    "\\'",
    "'||(SELECT/**/pg_sleep(10))||'",
    "\\x00",
    "a\x00b",
    "é",
    "\U0001d518",
    "'" * 256,
]
TABLES = ("recipient", "visitor_link", "list", "list_member", "data_source", "shared_audience", "run")


async def _table_state(pool: asyncpg.Pool) -> dict[str, int]:
    """Every table of the schema and how many rows the campaign tables hold."""
    names = {r["tablename"] for r in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(TABLES) <= names
    counts = {"tables": len(names)}
    for table in ("recipient", "visitor_link"):
        counts[table] = int(await pool.fetchval(f"SELECT count(*) FROM {table}"))
    return counts


def _status(kafka_bootstrap: str, topic_prefix: str) -> tuple[Producer, RunReporter]:
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    producer = Producer(settings, "test", RuntimeMetrics("test"))
    return producer, RunReporter(producer, service="test", topic_prefix=topic_prefix)


async def test_hostile_names_and_ids_through_the_import_path(
    campaign: Campaign, kafka_bootstrap: str, topic_prefix: str
) -> None:
    pool = campaign.pool
    before = await _table_state(pool)
    producer, status = _status(kafka_bootstrap, topic_prefix)
    importer = Importer(pool, status, ImportGuards())
    try:
        for n, name in enumerate(HOSTILE_NAMES):
            async with pool.acquire() as conn:
                await upsert_data_source(conn, CatalogDataSource(name=name, dpid=5000 + n, id_type="ecid"))
                await upsert_import_audience(
                    conn,
                    CatalogImportAudience(
                        audience_id=name, name=name, platform_segment_id=8000 + n, data_source=name, list=name
                    ),
                )
            members = [ecid_of(r) for r in range(n + 1, n + 4)]
            batch = AudienceMembership.model_validate(
                {
                    "run_id": uuid.uuid4(),
                    "seq": 0,
                    "last": True,
                    "audience_id": name,
                    "data_source": name,
                    "id_type": "ecid",
                    "mode": "delta",
                    "adds": members + HOSTILE_IDS,
                    "removes": HOSTILE_IDS[:2],
                }
            )
            outcome = await importer.apply(batch)
            assert outcome is not None
            assert outcome.state == "succeeded"
            assert outcome.counts["invalid"] == len(HOSTILE_IDS) + 2
            rows = await pool.fetch(
                """SELECT lm.recipient_id FROM list_member lm JOIN list l USING (list_id) WHERE l.name = $1""", name
            )
            assert {r["recipient_id"] for r in rows} == set(range(n + 1, n + 4))
            row = await pool.fetchrow(
                """SELECT sa.audience_id, sa.name, ds.name AS source, l.name AS list
                     FROM shared_audience sa JOIN data_source ds USING (data_source_id) JOIN list l USING (list_id)
                    WHERE sa.audience_id = $1""",
                name,
            )
            assert row is not None
            assert tuple(row) == (name, name, name, name)
            kept = {r["id"] for r in await pool.fetch("SELECT id FROM unmatched_id WHERE audience_id = $1", name)}
            # Stored exactly (a NUL, which Postgres text cannot hold, as U+FFFD), the removed ones gone.
            assert kept == {i.replace("\x00", "\ufffd") for i in HOSTILE_IDS[2:]}
            assert await pool.fetchval("SELECT state FROM run WHERE run_id = $1", batch.run_id) == "succeeded"
    finally:
        await producer.stop()
    assert await _table_state(pool) == before


async def test_hostile_names_through_the_export_path(
    campaign: Campaign, kafka_bootstrap: str, topic_prefix: str
) -> None:
    pool = campaign.pool
    before = await _table_state(pool)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    topic = f"{topic_prefix}audience-export-batches"
    await ensure_topics(settings, [topic, f"{topic_prefix}audience-sync-status"])
    producer, status = _status(kafka_bootstrap, topic_prefix)
    exporter = Exporter(pool, producer, batches_topic=topic, reporter=status, batch_size=100, allow_undeclared=True)
    try:
        for n, name in enumerate(HOSTILE_NAMES):
            async with pool.acquire() as conn:
                await upsert_data_source(conn, CatalogDataSource(name=name, dpid=6000 + n, id_type="ecid"))
                list_id = await ensure_list(conn, name)
                await conn.executemany(
                    "INSERT INTO list_member (list_id, recipient_id) VALUES ($1, $2)",
                    [(list_id, n + 3)],  # recipient 2 has two ECIDs
                )
            request = AudienceExportRequest(list_id=name, audience_name=name, data_source=name, requested_by=name)
            assert await exporter.export(request) is not None
            audience_id = export_audience_id(name, name)
            row = await pool.fetchrow(
                "SELECT name, list_id FROM shared_audience WHERE audience_id = $1 AND direction = 'export'",
                audience_id,
            )
            assert row is not None
            assert (row["name"], row["list_id"]) == (name, list_id)
            requested_by = await pool.fetchval(
                "SELECT requested_by FROM export_request WHERE request_id = $1", request.request_id
            )
            assert requested_by == name
            # The list's id as a string of digits finds it too; a hostile one finds nothing.
            with pytest.raises(PermanentError) as unknown:
                await exporter.export(
                    AudienceExportRequest(list_id=name[:190] + "?' --", audience_name=name, data_source=name)
                )
            assert unknown.value.context == {"list": name[:190] + "?' --"}
            with pytest.raises(PermanentError) as unknown:
                await exporter.export(
                    AudienceExportRequest(list_id=name, audience_name=name, data_source=name[:190] + "' OR 1=1")
                )
            assert unknown.value.context == {"data_source": name[:190] + "' OR 1=1"}
        records = await read_topic(kafka_bootstrap, topic, expect=len(HOSTILE_NAMES))
        batches = [AudienceExportBatch.model_validate_json(r.value) for r in records]
        assert sorted((b.data_source, b.audience_id, tuple(b.adds)) for b in batches) == sorted(
            (name, export_audience_id(name, name), (ecid_of(n + 3),)) for n, name in enumerate(HOSTILE_NAMES)
        )
    finally:
        await producer.stop()
    assert await _table_state(pool) == before


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env={**os.environ, **env, "COLUMNS": "250"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_hostile_names_through_the_cli(
    campaign: Campaign, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    pool = campaign.pool
    before = await _table_state(pool)
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_PREFIX": topic_prefix}
    source, audience, list_name = HOSTILE_NAMES[0], HOSTILE_NAMES[1], HOSTILE_NAMES[9]

    results: list[tuple[int, str]] = []
    for args in (
        ("datasource", "add", source, "--dpid", "4242", "--id-type", "ecid"),
        ("audience", "add-import", audience, "--segment", "77", "--data-source", source, "--list", list_name),
        ("runs", "--audience", audience, "--state", HOSTILE_NAMES[3]),
        ("export", "--list", list_name, "--audience", HOSTILE_NAMES[4], "--data-source", source),
    ):
        results.append(await _cli(env, *args))
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert await pool.fetchval("SELECT dpid FROM data_source WHERE name = $1", source) == 4242
    row = await pool.fetchrow(
        """SELECT sa.name, ds.name AS source, l.name AS list, sa.platform_segment_id
             FROM shared_audience sa JOIN data_source ds USING (data_source_id) JOIN list l USING (list_id)
            WHERE sa.audience_id = $1""",
        audience,
    )
    assert row is not None
    assert tuple(row) == (audience, source, list_name, 77)
    [record] = await read_topic(kafka_bootstrap, f"{topic_prefix}audience-export-requests", expect=1)
    request = AudienceExportRequest.model_validate_json(record.value)
    assert (request.list_id, request.audience_name, request.data_source) == (list_name, HOSTILE_NAMES[4], source)

    # What the models refuse is a one-line error (exit 2), not a traceback, and nothing is written. Side by side:
    # each CLI process spends seconds starting.
    refused = await asyncio.gather(
        _cli(env, "datasource", "add", "two\nlines", "--dpid", "1", "--id-type", "ecid"),
        _cli(env, "audience", "add-import", "a\x1bb", "--segment", "1", "--data-source", source, "--list", "l"),
        _cli(env, "export", "--list", "x" * 201, "--audience", "a", "--data-source", source),
    )
    for code, out in refused:
        assert code == 2, out
        assert "Traceback" not in out
        assert "error:" in out
    assert await pool.fetchval("SELECT count(*) FROM data_source WHERE name LIKE 'two%'") == 0
    assert await _table_state(pool) == before
