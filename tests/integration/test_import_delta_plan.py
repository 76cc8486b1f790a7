"""The delta's one statement probes the identity index for each ID, however many IDs a batch holds.

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
from services.reconcile.member_ids import ensure_delta_tables
from services.reconcile.unmatched import unmatched_reason
from shared.ids import KEY_TRANSFORMS
from tests.fixtures.bridge_db import Campaign, ecid_of, email_of

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
                "",
                target.audience_id,
                target.id_type,
                unmatched_reason(target.id_type),
                uuid.uuid4(),
                target.list_id,
                target.tracks_ids,
            )
        )
    assert "Nested Loop" in plan, plan
    assert "Hash Join" not in plan, plan
    assert "Merge Join" not in plan, plan
    probed = "visitor_link" if target.id_type == "ecid" else "recipient"
    assert "Index Scan using" in plan or "Index Only Scan using" in plan, plan
    assert f"Seq Scan on {probed}" not in plan, plan
    # Its cost passes jit_above_cost: compiling would take longer than probing.
    assert "JIT" not in plan, plan
