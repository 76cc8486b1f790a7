"""A ``delta`` batch applied: its IDs COPYed into a temporary table, joined once, the list changed at once.

The batch's valid IDs go into ``batch_ids``; one join with ``visitor_link`` (ECIDs) or with the indexed
declared key of ``recipient`` fills ``batch_matches``; then the matched adds join the list, the matched
removes leave it unless another of the member's IDs still holds it (:mod:`services.reconcile.member_ids`), and
the adds that matched nobody are kept (:mod:`services.reconcile.unmatched`).
"""

from __future__ import annotations

import uuid

from services.reconcile.declared_keys import RECONCILIATION_KEYS, declared_key_sql
from services.reconcile.import_target import Connection, ImportTarget, copy_ids, pick_statement
from services.reconcile.member_ids import add_members, ensure_member_adds, remove_members
from services.reconcile.unmatched import keep_unmatched_of_batch
from shared.ids import KEY_TRANSFORMS

_ECID_MATCH = "SELECT b.id, b.is_add, v.recipient_id FROM batch_ids b JOIN visitor_link v ON v.ecid = b.id"
# Same expression as the indexes (catalog.ensure_declared_key_index), so the planner uses them. Built
# once from fixed whitelists: no input ever reaches the SQL text.
_DECLARED_MATCH = {
    (key, transform): (
        "SELECT b.id, b.is_add, r.recipient_id FROM batch_ids b JOIN recipient r "  # noqa: S608
        f"ON {declared_key_sql(key, transform)} = b.id"
    )
    for key in RECONCILIATION_KEYS
    for transform in KEY_TRANSFORMS
}


def match_join(target: ImportTarget) -> str:
    """SQL yielding (id, is_add, recipient_id) for the IDs of ``batch_ids`` that match a recipient."""
    return pick_statement(target, _ECID_MATCH, _DECLARED_MATCH)


async def _ensure_temp_tables(conn: Connection) -> None:
    # Per connection, emptied at each commit: the batch's IDs and, once joined, its matches.
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS batch_ids (id text NOT NULL, is_add boolean NOT NULL)
               ON COMMIT DELETE ROWS;
           CREATE TEMP TABLE IF NOT EXISTS batch_matches (id text NOT NULL, is_add boolean NOT NULL,
               recipient_id bigint NOT NULL) ON COMMIT DELETE ROWS"""
    )


async def apply_delta(
    conn: Connection, target: ImportTarget, run_id: uuid.UUID, adds: list[str], removes: list[str]
) -> dict[str, int]:
    """Apply a delta batch's valid IDs to the target's list; returns its matched, unmatched, added and removed
    counts, and the members its removals left on the list because other IDs of theirs still hold them. Inside
    the caller's transaction (the temporary tables empty when it commits)."""
    await _ensure_temp_tables(conn)
    await copy_ids(conn, "batch_ids", ("is_add", "id"), [("t", adds), ("f", removes)])
    # A batch is small next to the identity tables: probing their indexes per ID is always right, but the
    # planner, blind to what computing a declared key costs, may prefer hashing every recipient instead.
    await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
    await conn.execute("INSERT INTO batch_matches (id, is_add, recipient_id) " + match_join(target))
    await conn.execute("SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on")
    matched: int = await conn.fetchval("SELECT count(DISTINCT id) FROM batch_matches")
    # Unmatched adds are kept, to be re-matched later.
    await keep_unmatched_of_batch(conn, target, run_id)
    # Adds, then removes (an ID a batch both adds and removes ends up removed, as before).
    await ensure_member_adds(conn)
    await conn.execute(
        """INSERT INTO member_adds (list_id, recipient_id, id, tracked)
           SELECT $1::bigint, m.recipient_id, m.id, $2::boolean FROM batch_matches m WHERE m.is_add""",
        target.list_id,
        target.tracks_ids,
    )
    added = await add_members(conn)
    removed, kept = await remove_members(conn, target.list_id)
    return {
        "matched": matched,
        # Distinct IDs: a user listed twice (a duplicate line in a platform file) is one ID, matched or not.
        "unmatched": len({*adds, *removes}) - matched,
        "added": added,
        "removed": removed,
        "kept_by_other_ids": kept,
    }
