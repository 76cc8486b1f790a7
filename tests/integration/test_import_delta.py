"""A delta batch's one statement: what it forgets and keeps, and its index probe per ID, however many IDs.

A streaming run is small and a platform's delta file can be large: either way the batch is matched by index
probes, never by hashing the whole identity table (the planner, blind to what computing a declared key costs,
would choose that for a large batch if it could: the look-up is kept apart from the join for that reason)."""

from __future__ import annotations

import uuid

import pytest

from services.reconcile.catalog import ensure_declared_key_index
from services.reconcile.declared_keys import RECONCILIATION_KEYS
from services.reconcile.import_delta import apply_statement
from services.reconcile.import_target import ImportTarget
from services.reconcile.importing import Importer
from services.reconcile.member_ids import ensure_delta_tables
from services.reconcile.unmatched import unmatched_reason
from shared.ids import KEY_TRANSFORMS
from tests.fixtures.bridge_db import Campaign, add_import_audience, ecid_of, email_of
from tests.fixtures.import_batches import list_members, membership_batch, unmatched_ids

pytestmark = pytest.mark.integration

_TARGETS = [ImportTarget("a", 1, 1, "ecid", None, "none")] + [
    ImportTarget("a", 1, 1, "declared", key, transform) for key in RECONCILIATION_KEYS for transform in KEY_TRANSFORMS
]


@pytest.mark.parametrize("target", _TARGETS, ids=lambda t: f"{t.id_type}-{t.reconciliation_key}-{t.key_transform}")
async def test_a_large_delta_is_matched_by_an_index_probe_per_id(campaign: Campaign, target: ImportTarget) -> None:
    ids = "\n".join(ecid_of(i) for i in range(20_000))
    async with campaign.pool.acquire() as conn, conn.transaction():
        # A campaign of some size (the fixture's 200 recipients are scanned faster than probed).
        more = range(campaign.recipients + 1, 30_001)
        await conn.copy_records_to_table(
            "recipient",
            records=[(i, email_of(i), f"CRM{i:06d}") for i in more],
            columns=("recipient_id", "email", "crm_id"),
        )
        await conn.copy_records_to_table(
            "visitor_link", records=[(ecid_of(i), i) for i in more], columns=("ecid", "recipient_id")
        )
        if target.reconciliation_key is not None:
            # As the catalog makes it for every data source matching by this key.
            await ensure_declared_key_index(conn, target.reconciliation_key, target.key_transform)
        await conn.execute("ANALYZE recipient; ANALYZE visitor_link")
        await ensure_delta_tables(conn)
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + apply_statement(target),
                ids,
                "\n".join(ecid_of(i) for i in range(20_000, 30_000)),
                target.audience_id,
                target.id_type,
                unmatched_reason(target.id_type),
                uuid.uuid4(),
                target.list_id,
                target.tracks_ids,
            )
        )
    matching = plan.split("CTE m\n", 1)[1].split("CTE forgotten", 1)[0]  # the look-up of the IDs
    assert "Nested Loop" in matching, plan
    assert "Hash Join" not in matching, plan
    assert "Merge Join" not in matching, plan
    probed = "visitor_link" if target.id_type == "ecid" else "recipient"
    assert "Index Scan using" in matching or "Index Only Scan using" in matching, plan
    assert f"Seq Scan on {probed}" not in matching, plan
    # The removed IDs' unmatched rows are found by the key, not by reading the audience's.
    forgetting = plan.split("CTE forgotten", 1)[1].split("CTE kept", 1)[0]
    assert "Index Cond: ((audience_id = 'a'::text) AND (id_type = " in forgetting, plan
    assert "(id = ANY (" in forgetting, plan
    # Its cost passes jit_above_cost: compiling would take longer than probing.
    assert "JIT" not in plan, plan


async def test_removed_ids_are_forgotten_and_one_both_added_and_removed_is_not_kept(
    campaign: Campaign, importer: Importer
) -> None:
    await add_import_audience(campaign.pool, "seg-d", "visitors", 5001)
    unknown = [str(10**37 + i) for i in range(4)]  # valid ECIDs nobody is linked to
    malformed = "1" * 37
    await importer.apply(membership_batch("seg-d", uuid.uuid4(), 0, adds=[*unknown[:2], malformed, ecid_of(1)]))
    assert set(await unmatched_ids(campaign, "seg-d")) == {*unknown[:2], malformed}

    outcome = await importer.apply(
        membership_batch(
            "seg-d",
            uuid.uuid4(),
            0,
            # unknown[2] is added and removed by the same batch: it ends up removed, so not kept either.
            adds=[unknown[2], unknown[3], ecid_of(2), ecid_of(3)],
            removes=[unknown[0], malformed, unknown[2], ecid_of(1), ecid_of(3)],
        )
    )
    assert outcome is not None
    assert outcome.state == "succeeded"
    assert await unmatched_ids(campaign, "seg-d") == {unknown[1]: "unknown_ecid", unknown[3]: "unknown_ecid"}
    assert await list_members(campaign, "seg-d") == {2}
    assert outcome.counts == {
        "received": 9,
        "invalid": 1,
        "matched": 3,
        "unmatched": 3,
        "added": 2,
        "removed": 2,
        "kept_by_other_ids": 0,
    }
