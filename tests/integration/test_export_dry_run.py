"""Dry runs against real Postgres and Kafka: the numbers are the real run's, and nothing is recorded or sent."""

from __future__ import annotations

from typing import Any

import pytest

from services.reconcile.export_dry_run import dry_run
from services.reconcile.export_guard import ExportGuards
from shared.errors import PermanentError
from shared.messages import AudienceExportRequest
from tests.fixtures.export_rig import ExportRig, rig  # noqa: F401
from tests.fixtures.export_rig import export_request as _request
from tests.helpers import read_topic
from tests.integration.test_cli import _cli

pytestmark = pytest.mark.integration

UNGUARDED = ExportGuards(max_removal_share=0.5, min_size=1000)


async def database_fingerprint(conn: Any) -> dict[str, str]:
    """Every table of the schema, as an md5 of its rows in a fixed order (sequences too): byte-identical or not."""
    tables = [r["t"] for r in await conn.fetch("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'")]
    prints = {}
    for table in sorted(tables):
        prints[table] = await conn.fetchval(
            f"SELECT md5(coalesce(string_agg(x::text, chr(10) ORDER BY x::text), '')) FROM \"{table}\" x"
        )
    for seq in await conn.fetch("SELECT sequencename AS s, last_value FROM pg_sequences WHERE schemaname = 'public'"):
        prints[f"sequence {seq['s']}"] = str(seq["last_value"])
    return prints


async def test_a_dry_run_is_the_real_run_and_changes_nothing(rig: ExportRig) -> None:  # noqa: F811
    pool = rig.campaign.pool
    await pool.execute("UPDATE recipient SET crm_id = NULL WHERE recipient_id IN (3, 4)")
    await rig.make_list("l", range(1, 21))
    await rig.exporter.export(_request("l", "crm-ids", "append"))
    await rig.confirm(await rig.batches(expect=1))
    # 11..20 leave, 21..25 join, 5 opts out: a mirror adds 5 and removes 11.
    await rig.make_list("l", [*range(1, 11), *range(21, 26)])
    await pool.execute("UPDATE recipient SET opted_out = true WHERE recipient_id = 5")
    mirror = _request("l", "crm-ids", "mirror")

    async with pool.acquire() as conn:
        before = await database_fingerprint(conn)
        result = await dry_run(conn, mirror, UNGUARDED, sample=3, allow_undeclared=True)
        assert await database_fingerprint(conn) == before

    assert result.verdict == "would_run"
    assert result.counts() == {
        "received": 15,
        "to_add": 5,
        "to_remove": 11,
        "excluded": 2,
        "opted_out": 1,
        "shared": 18,
    }
    assert result.samples == {
        "to_add": ["CRM000021", "CRM000022", "CRM000023"],
        "to_remove": ["CRM000005", "CRM000011", "CRM000012"],
        "excluded": ["3", "4"],
        "opted_out": ["5"],
    }
    # Nothing was sent: the batches topic holds the first run's batch only.
    assert len(await read_topic(rig.bootstrap, rig.topic, expect=1)) == 1

    # The real run afterwards is what the dry run said.
    await rig.exporter.export(mirror)
    [batch] = await rig.batches(expect=1)
    assert sorted(batch.adds) == [f"CRM{i:06d}" for i in range(21, 26)]
    assert sorted(batch.removes) == [f"CRM{i:06d}" for i in (5, *range(11, 21))]
    assert batch.totals is not None
    assert (batch.totals["adds"], batch.totals["removes"], batch.totals["excluded"]) == (5, 11, 2)


async def test_the_guards_verdict_and_refusals(rig: ExportRig) -> None:  # noqa: F811
    await rig.make_list("big", range(1, 101))
    await rig.exporter.export(_request("big", "crm-ids", "append", name="Big"))
    await rig.confirm(await rig.batches(expect=3))
    await rig.make_list("big", range(1, 11))  # 90 of the 100 would go
    guards = ExportGuards(max_removal_share=0.5, min_size=50)

    async with rig.campaign.pool.acquire() as conn:
        held = await dry_run(conn, _request("big", "crm-ids", "mirror", name="Big"), guards, allow_undeclared=True)
        assert (held.verdict, held.to_remove, held.shared) == ("would_be_held", 90, 100)
        assert "would remove 90 of the 100 IDs" in (held.reason or "")
        # append never removes: not guarded.
        appending = await dry_run(conn, _request("big", "crm-ids", "append", name="Big"), guards, allow_undeclared=True)
        assert appending.verdict == "would_run"

        await rig.make_list("other", range(1, 5))
        refused = await dry_run(conn, _request("other", "crm-ids", "append", name="Big"), guards, allow_undeclared=True)
        assert refused.verdict == "would_be_refused"
        assert "belongs to list 'big'" in (refused.reason or "")
        assert refused.counts()["to_add"] == 0


async def test_a_dry_run_of_an_unknown_list_is_an_error(rig: ExportRig) -> None:  # noqa: F811
    request = AudienceExportRequest(list_id="nope", audience_name="A", data_source="crm-ids", requested_by="t")
    async with rig.campaign.pool.acquire() as conn:
        with pytest.raises(PermanentError, match="unknown list"):
            await dry_run(conn, request, UNGUARDED, allow_undeclared=True)
    assert await rig.campaign.pool.fetchval("SELECT count(*) FROM shared_audience") == 0


async def test_the_export_command_dry_run(rig: ExportRig, database_url: str) -> None:  # noqa: F811
    await rig.make_list("l", range(1, 8))
    env = {"DATABASE_URL": database_url, "EXPORT_ALLOW_UNDECLARED": "true", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    args = ("export", "--list", "l", "--audience", "VIP", "--data-source", "crm-ids", "--mode", "mirror")
    async with rig.campaign.pool.acquire() as conn:
        before = await database_fingerprint(conn)
    # No Kafka reachable (port 1): a dry run never needs it.
    code, out = await _cli(env, *args, "--dry-run")
    assert code == 0, out
    assert "dry run of mirror export of list 'l' to audience 'VIP'" in out
    assert ": would run" in out
    assert "IDs to add: 7" in out
    assert "sample to add: CRM000001, CRM000002, CRM000003" in out
    assert "nothing was recorded or sent" in out
    async with rig.campaign.pool.acquire() as conn:
        assert await database_fingerprint(conn) == before

    code, out = await _cli({**env, "EXPORT_ALLOW_UNDECLARED": "false"}, *args, "--dry-run")
    assert code == 0, out
    assert "would be REFUSED" in out
    assert "no export audience 'VIP' of data source 'crm-ids' is declared" in out
    code, out = await _cli(env, *args[:2], "nope", *args[3:], "--dry-run")
    assert code == 2
    assert "unknown list" in out
