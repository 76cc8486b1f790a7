"""A ``delta`` batch applied: its IDs matched, kept or queued for the list in one statement, then the list changed.

A streaming run is one small delta batch, and what it costs is its round trips to Postgres, not its rows: on a
busy machine each is a wait for two processes to be scheduled. So the batch's valid IDs travel as two texts
into one statement that matches them (an index probe per ID: ``visitor_link`` for ECIDs, the indexed declared
key of ``recipient`` otherwise), records the matches in ``batch_matches``, forgets the removed IDs kept as
unmatched and keeps the adds that matched nobody (:mod:`services.reconcile.unmatched`'s table, to be re-matched
later), queues the matched adds in ``member_adds`` and returns the counts. Then the matched adds join the list
and the matched removes leave it unless another of the member's IDs still holds it
(:mod:`services.reconcile.member_ids`), each only when the batch has some.
"""

from __future__ import annotations

import uuid

from services.reconcile.declared_keys import RECONCILIATION_KEYS, declared_key_sql
from services.reconcile.import_target import Connection, ImportTarget, pick_statement
from services.reconcile.member_ids import add_members, ensure_delta_tables, remove_members
from services.reconcile.unmatched import unmatched_reason
from shared.ids import KEY_TRANSFORMS

# $1 adds, $2 removes (each one text, an ID a line: see _lines); $3 audience, $4 ID type, $5 unmatched reason,
# $6 run, $7 list, $8 tracked. Removed IDs are no longer wanted, matched or not: forgotten. An ID the batch both
# adds and removes ends up removed: not kept either (and so no row is touched twice by the statement). The
# look-up is a LATERAL subquery kept apart (OFFSET 0), so it is always an index probe per ID: the planner, blind
# to what computing a declared key costs, would otherwise hash every recipient for a large batch. DISTINCT
# unmatched IDs: an ID twice in one batch would make the upsert touch a row twice, which Postgres refuses.
_BEFORE_LOOKUP = """
WITH b AS (SELECT a.id, true AS is_add FROM unnest(string_to_array($1, E'\\n')) AS a(id)
           UNION ALL SELECT r.id, false FROM unnest(string_to_array($2, E'\\n')) AS r(id)),
m AS (INSERT INTO batch_matches (id, is_add, recipient_id)
      SELECT b.id, b.is_add, r.recipient_id FROM b CROSS JOIN LATERAL ("""
_AFTER_LOOKUP = """ OFFSET 0) r
      RETURNING id, is_add, recipient_id),
forgotten AS (DELETE FROM unmatched_id
               WHERE audience_id = $3 AND id_type = $4 AND id = ANY(string_to_array($2, E'\\n'))),
kept AS (INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id)
         SELECT DISTINCT $3::text, $4::text, b.id, $5::text, $6::uuid FROM b
          WHERE b.is_add AND NOT EXISTS (SELECT 1 FROM m WHERE m.id = b.id)
            AND NOT EXISTS (SELECT 1 FROM b r WHERE NOT r.is_add AND r.id = b.id)
         ON CONFLICT (audience_id, id_type, id)
         DO UPDATE SET reason = EXCLUDED.reason, run_id = EXCLUDED.run_id, last_seen = now()),
queued AS (INSERT INTO member_adds (list_id, recipient_id, id, tracked)
           SELECT $7::bigint, m.recipient_id, m.id, $8::boolean FROM m WHERE m.is_add)
SELECT count(DISTINCT id) AS matched, count(*) FILTER (WHERE is_add) AS matched_adds,
       count(*) FILTER (WHERE NOT is_add) AS matched_removes
  FROM m"""

_ECID_APPLY = f"{_BEFORE_LOOKUP}SELECT v.recipient_id FROM visitor_link v WHERE v.ecid = b.id{_AFTER_LOOKUP}"  # noqa: S608
# Same expression as the indexes (catalog.ensure_declared_key_index), so the probe uses them. Built once from
# fixed whitelists: no input ever reaches the SQL text.
_DECLARED_APPLY = {
    (key, transform): (
        f"{_BEFORE_LOOKUP}SELECT r.recipient_id FROM recipient r "  # noqa: S608
        f"WHERE {declared_key_sql(key, transform)} = b.id{_AFTER_LOOKUP}"
    )
    for key in RECONCILIATION_KEYS
    for transform in KEY_TRANSFORMS
}


def _lines(ids: list[str]) -> str:
    """IDs as one text, one a line, that Postgres splits: asyncpg would encode a ``text[]`` element by element,
    several times the cost of the join (see :func:`services.reconcile.import_snapshot.stage_ids`). Valid IDs
    hold no whitespace and are never empty (:mod:`shared.ids`): only those reach here."""
    joined = "\n".join(ids)
    if ids and (not all(ids) or joined.count("\n") != len(ids) - 1):
        raise ValueError("a delta's valid IDs hold no line break and are never empty")
    return joined


def apply_statement(target: ImportTarget) -> str:
    """The statement matching, keeping and queueing a batch's IDs for the target's ID type and declared key."""
    return pick_statement(target, _ECID_APPLY, _DECLARED_APPLY)


async def apply_delta(
    conn: Connection, target: ImportTarget, run_id: uuid.UUID, adds: list[str], removes: list[str]
) -> dict[str, int]:
    """Apply a delta batch's valid IDs to the target's list; returns its matched, unmatched, added and removed
    counts, and the members its removals left on the list because other IDs of theirs still hold them. Inside
    the caller's transaction (the temporary tables empty when it commits). Adds, then removes: an ID a batch
    both adds and removes ends up removed."""
    await ensure_delta_tables(conn)
    row = await conn.fetchrow(
        apply_statement(target),
        _lines(adds),
        _lines(removes),
        target.audience_id,
        target.id_type,
        unmatched_reason(target.id_type),
        run_id,
        target.list_id,
        target.tracks_ids,
    )
    added = await add_members(conn, tracked=target.tracks_ids) if row["matched_adds"] else 0
    removed, kept = await remove_members(conn, target.list_id) if row["matched_removes"] else (0, 0)
    return {
        "matched": row["matched"],
        # Distinct IDs: a user listed twice (a duplicate line in a platform file) is one ID, matched or not.
        "unmatched": len({*adds, *removes}) - row["matched"],
        "added": added,
        "removed": removed,
        "kept_by_other_ids": kept,
    }
