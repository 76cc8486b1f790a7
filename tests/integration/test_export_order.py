"""A run's adds reach publish sorted byte-wise, batch after batch (services/reconcile/export_diff.py), so that the
recorded set's build and the row-by-row recording (services/publish, schemas/sql/031) find them sorted."""

from __future__ import annotations

import math

import pytest

from services.reconcile.catalog import ensure_list
from services.reconcile.export_diff import CURRENT_IDS, diff_sql
from shared.messages import AudienceExportBatch
from tests.fixtures.bridge_db import Campaign, ecid_of, email_of
from tests.fixtures.export_rig import ExportRig, export_request, rig  # noqa: F401

pytestmark = pytest.mark.integration

KINDS = {
    "hashed-emails": ("declared", "email", "sha256"),
    "visitors": ("ecid", None, "none"),
    "crm-ids": ("declared", "crm_id", "none"),
}


async def _current_ids(made: ExportRig, list_name: str, data_source: str) -> list[str]:
    list_id = await made.campaign.pool.fetchval("SELECT list_id FROM list WHERE name = $1", list_name)
    rows = await made.campaign.pool.fetch(f"SELECT id FROM ({CURRENT_IDS[KINDS[data_source]]}) c", list_id)
    return [r["id"] for r in rows]


def _adds(batches: list[AudienceExportBatch]) -> list[str]:
    return [i for b in sorted(batches, key=lambda b: b.seq) for i in b.adds]


def _byte_order(ids: list[str]) -> list[str]:
    return sorted(ids, key=str.encode)


@pytest.mark.parametrize("mode", ["append", "full"])
@pytest.mark.parametrize("data_source", list(KINDS))
async def test_a_runs_adds_arrive_sorted_byte_wise_across_its_batches(
    rig: ExportRig,  # noqa: F811
    data_source: str,
    mode: str,
) -> None:
    await rig.make_list("ordered", range(1, 101))
    expected = await _current_ids(rig, "ordered", data_source)
    assert len(expected) >= 100  # every recipient has the key (and some several ECIDs)
    await rig.exporter.export(export_request("ordered", data_source, mode))
    adds = _adds(await rig.batches(expect=math.ceil(len(expected) / 40)))  # the rig's batches hold 40
    assert adds == _byte_order(expected)  # each ID once, in exported_member's key order


async def test_an_append_into_an_audience_holding_ids_sends_the_rest_sorted(rig: ExportRig) -> None:  # noqa: F811
    await rig.make_list("ordered", range(1, 51))
    await rig.exporter.export(export_request("ordered", "hashed-emails"))
    first = await rig.batches(expect=2)
    await rig.confirm(first)
    await rig.make_list("ordered", range(1, 131))
    expected = set(await _current_ids(rig, "ordered", "hashed-emails")) - set(_adds(first))
    await rig.exporter.export(export_request("ordered", "hashed-emails"))
    adds = _adds(await rig.batches(expect=2))
    assert adds == _byte_order(list(expected))
    assert len(adds) == 80


@pytest.mark.parametrize("mode", ["append", "mirror", "full"])
@pytest.mark.parametrize("data_source", list(KINDS))
async def test_a_large_lists_adds_are_read_sorted_where_a_hash_would_scramble_them(
    campaign: Campaign, data_source: str, mode: str
) -> None:
    # 30,000 more recipients: at this size Postgres de-duplicates by a hash unless the order is asked for.
    extra = range(1001, 31001)
    async with campaign.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "recipient",
            records=[(i, email_of(i), f"CRM{i:06d}") for i in extra],
            columns=("recipient_id", "email", "crm_id"),
        )
        await conn.copy_records_to_table(
            "visitor_link", records=[(ecid_of(i), i) for i in extra], columns=("ecid", "recipient_id")
        )
        list_id = await ensure_list(conn, "large")
        await conn.execute(
            "INSERT INTO list_member (list_id, recipient_id) SELECT $1, recipient_id FROM recipient", list_id
        )
        await conn.execute("ANALYZE recipient, visitor_link, list_member")
        [adds] = [q for q in diff_sql(CURRENT_IDS[KINDS[data_source]], mode) if q.is_add]
        args = (list_id, "ab-nothing-shared") if adds.by_audience else (list_id,)
        ids = [r["id"] for r in await conn.fetch(adds.sql, *args)]
    assert len(ids) == len(set(ids)) == campaign.recipients + len(extra) + (data_source == "visitors")
    assert ids == _byte_order(ids)
