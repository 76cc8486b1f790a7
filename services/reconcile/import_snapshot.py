"""A ``full`` run: its staged IDs matched whole when its last batch is in, guarded, applied as the list.

Batches of a full run are staged as they come, a row per batch (``import_stage_batch``: its IDs as one array,
so that a run's end reads and deletes a row per batch, not per ID). When the run is complete its distinct
IDs are matched in one pass (hash joins, as Postgres alone would do it: per batch, index probes cost several
times more) into ``snapshot_match``, and the list's membership is replaced atomically, with each member's IDs
(:mod:`services.reconcile.member_ids`) — unless the snapshot matches nobody or would remove too much of the
list (:class:`ImportGuards`): the run is then held back for an operator to release, its IDs staged until then.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from services.reconcile.consent import admitted_sql
from services.reconcile.declared_keys import RECONCILIATION_KEYS, declared_key_sql
from services.reconcile.import_target import Connection, ImportTarget, affected, pick_statement
from services.reconcile.unmatched import forget_stale, keep_unmatched_of_snapshot
from shared.errors import TransientError
from shared.ids import KEY_TRANSFORMS

DEFAULT_WORK_MEM_MB = 256
RELEASE_HINT = "held back (release it with `audience-bridge release`)"
NO_MATCH = "no ID of this snapshot matched a recipient"


@dataclass(frozen=True, slots=True)
class ImportGuards:
    """When a full snapshot is held back instead of applied."""

    max_removal_share: float = 0.5
    min_list_size: int = 100


@dataclass(frozen=True, slots=True)
class SnapshotEnd:
    """How a complete full run ended: its distinct IDs matched and unmatched, then either why it was held back
    or the members it added and removed."""

    matched: int
    unmatched: int
    held: str | None = None
    changes: MemberChanges | None = None

    def counts(self) -> dict[str, int]:
        matching = {"matched": self.matched, "unmatched": self.unmatched}
        return matching if self.changes is None else {**matching, **self.changes.counts()}


@dataclass(frozen=True, slots=True)
class MemberChanges:
    """What applying a snapshot did to its list: members added and removed, and members that stayed although
    some of their IDs left the segment (kept by the others)."""

    added: int = 0
    removed: int = 0
    kept_by_other_ids: int = 0

    def counts(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "kept_by_other_ids": self.kept_by_other_ids}


# Every distinct staged ID of a run (``snapshot_ids``, see match_snapshot) with the recipient it matches, or
# NULL: a LEFT JOIN, so the unmatched come out of the same pass.
_SNAPSHOT_IDS = "snapshot_ids s"
_ECID_SNAPSHOT = f"SELECT s.id, v.recipient_id FROM {_SNAPSHOT_IDS} LEFT JOIN visitor_link v ON v.ecid = s.id"  # noqa: S608
_DECLARED_SNAPSHOT = {
    (key, transform): (
        f"SELECT s.id, r.recipient_id FROM {_SNAPSHOT_IDS} LEFT JOIN recipient r "  # noqa: S608
        f"ON {declared_key_sql(key, transform)} = s.id"
    )
    for key in RECONCILIATION_KEYS
    for transform in KEY_TRANSFORMS
}


def snapshot_join(target: ImportTarget) -> str:
    """SQL yielding (id, recipient_id or NULL) for every ID of ``snapshot_ids`` (a run's distinct staged IDs)."""
    return pick_statement(target, _ECID_SNAPSHOT, _DECLARED_SNAPSHOT)


async def stage_ids(conn: Connection, run_id: uuid.UUID, seq: int, ids: list[str]) -> None:
    """Stage a full batch's valid IDs as they are, as one row: matched, counted and applied with the whole
    snapshot when the run ends. (A full snapshot has no removals: absence is what removes.)

    Sent as one text, one ID a line, that Postgres splits: asyncpg encodes a ``text[]`` element by element
    (a type check and an ABC check each), 7 ms of the service's CPU per 10,000 IDs against 0.7 ms for the
    join, and staging is what a snapshot's run waits on until its last batch (issue 20's profile). An ID never
    holds a line break (IDs hold no whitespace); should one, the array is sent as it is."""
    joined = "\n".join(ids)
    # (An empty text splits into no element at all: a lone empty ID goes as an array too.)
    if joined and joined.count("\n") == len(ids) - 1:
        await conn.execute(
            "INSERT INTO import_stage_batch (run_id, seq, ids) VALUES ($1, $2, string_to_array($3, E'\\n'))",
            run_id,
            seq,
            joined,
        )
        return
    await conn.execute(
        "INSERT INTO import_stage_batch (run_id, seq, ids) VALUES ($1, $2, $3::text[])", run_id, seq, ids
    )


# A run's distinct staged IDs: its own rows, found by the key (the other runs' are not read).
_STAGED_IDS = (
    "SELECT DISTINCT u.id FROM import_stage_batch b CROSS JOIN LATERAL unnest(b.ids) AS u(id) WHERE b.run_id = $1"
)


async def _no_nested_loops(conn: Connection) -> None:
    """For the rest of the transaction: whole-snapshot statements hash their joins. The staged and the
    temporary tables fill and empty with every run, so their statistics are often those of an empty table;
    trusting them, the planner once nested-looped a 200,000-member list over a 120,000-row snapshot for
    minutes (chaos scenario). A hash join is linear whatever the estimates say.

    No JIT either: a plan with nested loops disabled costs above ``jit_above_cost`` whatever its size, and
    compiling it with inlining and optimisation took longer than running many of these statements."""
    await conn.execute("SET LOCAL enable_nestloop = off; SET LOCAL jit = off")


async def match_snapshot(
    conn: Connection, run_id: uuid.UUID, target: ImportTarget, *, work_mem_mb: int = DEFAULT_WORK_MEM_MB
) -> dict[str, int]:
    """Match every ID staged for a full run, in one pass, into ``snapshot_match`` (for the rest of the
    transaction); keep the unmatched ones. Returns the distinct IDs matched and unmatched."""
    # Per connection, emptied at each commit.
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS snapshot_match (id text NOT NULL, recipient_id bigint)
               ON COMMIT DELETE ROWS"""
    )
    await _no_nested_loops(conn)
    # Room to hash the snapshot's IDs in memory rather than in batches on disk.
    await conn.execute("SELECT set_config('work_mem', $1, true)", f"{int(work_mem_mb)}MB")
    await conn.execute("TRUNCATE snapshot_match")
    # The distinct IDs are counted on the way (an ID may match several recipients, two sharing an e-mail:
    # counting them afterwards took a second pass over the matches).
    # Distinct by hashing: the planner takes a batch's array for ten IDs, and for so few it would sort them
    # (5,000,000 IDs sorted on disk took most of a minute).
    await conn.execute("SET LOCAL enable_sort = off")
    ids = await conn.fetchval(
        f"WITH snapshot_ids AS MATERIALIZED ({_STAGED_IDS}), "  # noqa: S608 - fixed text
        "matched AS (INSERT INTO snapshot_match (id, recipient_id) " + snapshot_join(target) + ") "
        "SELECT count(*) FROM snapshot_ids",
        run_id,
    )
    await conn.execute("SET LOCAL enable_sort = on")
    unmatched = await keep_unmatched_of_snapshot(conn, target, run_id)
    # Each unmatched ID is one row (the LEFT JOIN's NULL): the others matched.
    return {"matched": ids - unmatched, "unmatched": unmatched}


async def guard_reason(conn: Connection, list_id: int, matched: int, guards: ImportGuards) -> str | None:
    """Why the matched snapshot (in ``snapshot_match``) must be held back, if it must."""
    if matched == 0:
        # Not "empty": a snapshot of IDs of another data source, or of people the campaign does not know, is not.
        return f"{NO_MATCH}: {RELEASE_HINT}"
    current = await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", list_id)
    if current < guards.min_list_size:
        return None
    leaving = await conn.fetchval(
        """SELECT count(*) FROM list_member lm
            WHERE lm.list_id = $1
              AND NOT EXISTS (SELECT 1 FROM snapshot_match s WHERE s.recipient_id = lm.recipient_id)""",
        list_id,
    )
    if leaving > guards.max_removal_share * current:
        return (
            f"full snapshot would remove {leaving} of {current} list members "
            f"(more than {guards.max_removal_share:.0%}): {RELEASE_HINT}"
        )
    return None


# A member's IDs in the snapshot (an ECID list's record, see member_ids): first those of members staying. Most
# hold one ID, the same as before: a member differs when a row of the snapshot names another ID than the one it
# holds (or it holds none recorded, or several), so only those are given their IDs, compared as sets. (Grouping
# every member's IDs to compare them cost more than the rest of applying a steady snapshot.) The count:
# members that stayed although some of their IDs left the segment.
_RESET_IDS = """
WITH differ AS (
    SELECT DISTINCT lm.recipient_id, lm.platform_ids AS was
      FROM snapshot_match s JOIN list_member lm ON lm.list_id = $1 AND lm.recipient_id = s.recipient_id
     WHERE lm.platform_ids IS NULL OR cardinality(lm.platform_ids) <> 1 OR lm.platform_ids[1] <> s.id
), now AS (
    SELECT s.recipient_id, d.was, array_agg(s.id) AS ids FROM snapshot_match s JOIN differ d USING (recipient_id)
     GROUP BY s.recipient_id, d.was
), changed AS (
    UPDATE list_member lm SET platform_ids = n.ids FROM now n
     WHERE lm.list_id = $1 AND lm.recipient_id = n.recipient_id
       AND (n.was IS NULL OR NOT (n.was @> n.ids AND n.was <@ n.ids))
    RETURNING n.was IS NOT NULL AND NOT n.was <@ n.ids AS lost_some
)
SELECT count(*) FILTER (WHERE lost_some) FROM changed"""
# Then the new members, each once, in the list's key order (sorted inserts append to the primary key instead of
# landing all over it). A plain insert: ON CONFLICT's speculative insertion cost a third more per row. Another
# transaction adding one of them meanwhile (re-matching, the campaign) makes it fail on the key: retried then,
# from the start.
_ADD_TRACKED = f"""
INSERT INTO list_member (list_id, recipient_id, platform_ids)
SELECT $1::bigint, s.recipient_id, array_agg(s.id) FROM snapshot_match s
 WHERE s.recipient_id IS NOT NULL AND {admitted_sql("s.recipient_id")}
   AND NOT EXISTS (SELECT 1 FROM list_member lm WHERE lm.list_id = $1 AND lm.recipient_id = s.recipient_id)
 GROUP BY s.recipient_id
 ORDER BY s.recipient_id"""  # noqa: S608 - fixed text (IMPORT_OPTED_OUT: services/reconcile/consent.py)
_ADD = f"""
INSERT INTO list_member (list_id, recipient_id)
SELECT DISTINCT $1::bigint, s.recipient_id FROM snapshot_match s
 WHERE s.recipient_id IS NOT NULL AND {admitted_sql("s.recipient_id")}
   AND NOT EXISTS (SELECT 1 FROM list_member lm WHERE lm.list_id = $1 AND lm.recipient_id = s.recipient_id)
 ORDER BY 2"""  # noqa: S608 - fixed text


async def apply_snapshot(conn: Connection, run_id: uuid.UUID, target: ImportTarget) -> MemberChanges:
    """Replace the target list's membership with the matched snapshot (:func:`match_snapshot`, same transaction)
    and drop the run's staged IDs; returns what changed."""
    await _no_nested_loops(conn)
    list_id = target.list_id
    # Leavers first: the look-ups of what the list has then read fewer members.
    removed = await conn.execute(
        """DELETE FROM list_member lm
            WHERE lm.list_id = $1
              AND NOT EXISTS (SELECT 1 FROM snapshot_match s WHERE s.recipient_id = lm.recipient_id)""",
        list_id,
    )
    kept = 0
    # A list with no member left (a first import) has no one to compare: the snapshot's matches are not hashed.
    has_members = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM list_member WHERE list_id = $1)", list_id)
    if target.tracks_ids and has_members:
        kept = await conn.fetchval(_RESET_IDS, list_id)
    if target.tracks_ids:
        # Grouped by sorting (the insert's order anyway): hashing held every member's array at once and spilled to
        # disk (the planner, blind to a staged table's groups, expects a few hundred).
        await conn.execute("SET LOCAL enable_hashagg = off")
    try:
        added = await conn.execute(_ADD_TRACKED if target.tracks_ids else _ADD, list_id)
    except asyncpg.UniqueViolationError as exc:
        raise TransientError("list members were added concurrently", list_id=list_id) from exc
    await conn.execute("SET LOCAL enable_hashagg = on")
    await conn.execute("DELETE FROM import_stage_batch WHERE run_id = $1", run_id)
    await forget_stale(conn, target.audience_id, run_id)
    return MemberChanges(added=affected(added), removed=affected(removed), kept_by_other_ids=kept)


async def end_snapshot(
    conn: Connection, run_id: uuid.UUID, target: ImportTarget, guards: ImportGuards, *, work_mem_mb: int
) -> SnapshotEnd:
    """A complete full run's snapshot matched, then applied as the list or, if the guards say so, held back."""
    matching = await match_snapshot(conn, run_id, target, work_mem_mb=work_mem_mb)
    held = await guard_reason(conn, target.list_id, matching["matched"], guards)
    if held is not None:
        return SnapshotEnd(matching["matched"], matching["unmatched"], held=held)
    changes = await apply_snapshot(conn, run_id, target)
    return SnapshotEnd(matching["matched"], matching["unmatched"], changes=changes)
