"""Membership follows every ID: the platform IDs that hold each member of a list, added and removed set-wise.

A recipient may hold several ECIDs (``visitor_link``): two browsers, both in a segment. A delta removing one
of them must not take the recipient off the list while the other is still in the segment. So a list fed by
ECIDs records, per member, the segment's ECIDs that put the recipient there (``list_member.platform_ids``):

* an added ID joins its recipients' IDs (the recipient joins the list with it, if it was not a member);
* a removed ID leaves them, and a recipient leaves the list only when none of its IDs is left. An ID left
  behind counts only while it is still the recipient's own (its visitor link may have gone meanwhile);
  a member kept that way is counted (``kept_by_other_ids``);
* a full snapshot sets every member's IDs exactly (:mod:`services.reconcile.import_snapshot`).

Nothing is recorded (NULL) for lists fed by declared IDs: a data source gives a recipient one declared ID,
its key, so the ID removed is always the only one. NULL also marks members from before the record existed,
or added by another writer: a removal of any ID matching them removes them, as it always did.

Adds come from ``member_adds`` (a delta's matches or re-matched IDs, any number of lists); removals from a
delta's ``batch_matches`` (:mod:`services.reconcile.import_delta`). Both inside the caller's transaction.
"""

from __future__ import annotations

from services.reconcile.consent import admitted_sql
from services.reconcile.import_target import Connection, affected

# The temporary tables of members to add and of a delta's matches: per connection, emptied when the caller's
# transaction commits. Created in that transaction (a rolled-back one takes them along), so each caller asks again.
# ``tracked``: record ``id`` among the member's IDs (an ECID list); otherwise the member is only added.
_MEMBER_ADDS = """CREATE TEMP TABLE IF NOT EXISTS member_adds (list_id bigint NOT NULL,
    recipient_id bigint NOT NULL, id text NOT NULL, tracked boolean NOT NULL) ON COMMIT DELETE ROWS"""
# No JIT for the rest of a delta's transaction: its statements probe an index per ID, and a large batch's
# estimate passes jit_above_cost while compiling would cost more than it saves (100 ms and more).
_DELTA_TABLES = f"""{_MEMBER_ADDS};
CREATE TEMP TABLE IF NOT EXISTS batch_matches (id text NOT NULL, is_add boolean NOT NULL,
    recipient_id bigint NOT NULL) ON COMMIT DELETE ROWS;
SET LOCAL jit = off"""


async def ensure_member_adds(conn: Connection) -> None:
    """``member_adds``, created if this connection has not got it yet."""
    await conn.execute(_MEMBER_ADDS)


async def ensure_delta_tables(conn: Connection) -> None:
    """``member_adds`` and a delta's ``batch_matches`` (id, is_add, recipient_id), and no JIT for the rest of the
    caller's transaction, in one round trip."""
    await conn.execute(_DELTA_TABLES)


# IMPORT_OPTED_OUT: an opted-out recipient may be kept out (services/reconcile/consent.py). Counts the members
# added and the members asked for: when they are equal, every member was new and holds its IDs already.
_ADD = f"""WITH a AS (SELECT list_id, recipient_id, array_agg(DISTINCT id) FILTER (WHERE tracked) AS ids
                       FROM member_adds GROUP BY list_id, recipient_id),
                added AS (INSERT INTO list_member (list_id, recipient_id, platform_ids)
                          SELECT list_id, recipient_id, ids FROM a WHERE {admitted_sql("a.recipient_id")}
                           ORDER BY list_id, recipient_id
                          ON CONFLICT DO NOTHING RETURNING 1)
           SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM a) AS asked"""  # noqa: S608 - fixed text

# Members already there (or kept out by consent) gain the new IDs; members with no record stay without one: the
# IDs that hold them are not known, only these new ones.
_MERGE = """UPDATE list_member lm SET platform_ids = ARRAY(SELECT DISTINCT i FROM unnest(lm.platform_ids || a.ids) i)
             FROM (SELECT list_id, recipient_id, array_agg(DISTINCT id) AS ids FROM member_adds
                    WHERE tracked GROUP BY list_id, recipient_id) a
            WHERE lm.list_id = a.list_id AND lm.recipient_id = a.recipient_id
              AND lm.platform_ids IS NOT NULL AND NOT lm.platform_ids @> a.ids"""


async def add_members(conn: Connection, *, tracked: bool = True) -> int:
    """Apply ``member_adds``: new members join with their IDs, members already there gain the new ones.
    Returns the members added. ``tracked=False``: no row of ``member_adds`` is tracked, so there are no IDs
    to merge (a declared-ID list) and the second statement is left out.

    Two statements, not one upsert: the insert skips a member another transaction adds meanwhile (it waits for
    that one to commit), and the merge, a statement of its own, then sees that member and gives it the IDs. The
    merge runs only when the insert skipped a member: a stream of new members (every add of a click, of a
    segment growing) has none to merge, and the merge's probe of each member cost as much as the insert (more
    when the planner, with a list growing faster than it is analyzed, hashed the whole of ``list_member``)."""
    row = await conn.fetchrow(_ADD)
    assert row is not None
    added: int = row["added"]
    if tracked and added < row["asked"]:
        await conn.execute(_MERGE)
    return added


# The members of list $1 that a delta's removed IDs match, each with those IDs (``gone``, from batch_matches:
# id, is_add, recipient_id); an ID of a member still holds it when the batch does not remove it and it is still
# the member's own (linked to it). Written out twice rather than assembled: the delete and the update test
# the same thing, each on the row as it is when the statement reaches it.
_REMOVE = """
WITH gone AS (SELECT recipient_id, array_agg(id) AS ids FROM batch_matches WHERE NOT is_add GROUP BY recipient_id)
DELETE FROM list_member lm USING gone g
 WHERE lm.list_id = $1 AND lm.recipient_id = g.recipient_id
   AND (lm.platform_ids IS NULL
        OR NOT EXISTS (SELECT 1 FROM unnest(lm.platform_ids) i
                        WHERE i <> ALL (g.ids)
                          AND EXISTS (SELECT 1 FROM visitor_link v
                                       WHERE v.ecid = i AND v.recipient_id = lm.recipient_id)))"""
_KEEP = """
WITH gone AS (SELECT recipient_id, array_agg(id) AS ids FROM batch_matches WHERE NOT is_add GROUP BY recipient_id)
UPDATE list_member lm
   SET platform_ids = ARRAY(SELECT i FROM unnest(lm.platform_ids) i
                             WHERE i <> ALL (g.ids)
                               AND EXISTS (SELECT 1 FROM visitor_link v
                                            WHERE v.ecid = i AND v.recipient_id = lm.recipient_id))
  FROM gone g
 WHERE lm.list_id = $1 AND lm.recipient_id = g.recipient_id AND lm.platform_ids IS NOT NULL"""


async def remove_members(conn: Connection, list_id: int) -> tuple[int, int]:
    """Apply a delta's removed IDs (``batch_matches``) to list ``list_id``: the members none of whose IDs is left
    leave, the others keep the IDs left. Returns (members removed, members kept by their other IDs)."""
    removed = await conn.execute(_REMOVE, list_id)
    # Whoever is still there was kept by another ID.
    kept = await conn.execute(_KEEP, list_id)
    return affected(removed), affected(kept)
