"""Import: membership batches become list membership, set-wise and exactly once.

Per batch, in one Postgres transaction, record ``(run_id, seq)`` in ``applied_batch`` (a duplicate is a
no-op), then

* ``delta``: COPY the batch's IDs into a temporary table, join them with ``visitor_link`` (ECIDs) or with
  the indexed declared key of ``recipient``, and add and remove list members at once;
* ``full``: COPY the batch's IDs into ``import_stage_id``. When every batch of the run is in (the ``last``
  one says how many there are), match the whole snapshot in one pass (hash joins, as Postgres alone would
  do it: per batch, index probes cost several times more) and replace the list's membership atomically,
  unless the snapshot is empty or would remove too much of the list: then the run is held back as
  ``blocked`` for an operator to release, its IDs staged until then.

IDs that match nobody are kept in ``unmatched_id`` with the reason, to be re-matched later.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.reconcile.keys import KEY_TRANSFORMS, RECONCILIATION_KEYS, declared_key_sql
from services.reconcile.metrics import NoReconcileMetrics, ReconcileMetrics
from shared.copy_text import copy_rows_sharing_columns
from shared.errors import PermanentError, TransientError
from shared.ids import invalid_ids
from shared.kafka import Delivery, Rejected
from shared.logging import get_logger
from shared.messages import AudienceMembership, RunState
from shared.status import StatusReporter

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection or a pool's proxy of one

COUNT_KEYS = ("received", "matched", "unmatched", "invalid", "added", "removed")
DEFAULT_WORK_MEM_MB = 256


@dataclass(frozen=True, slots=True)
class ImportGuards:
    """When a full snapshot is held back instead of applied."""

    max_removal_share: float = 0.5
    min_list_size: int = 100


@dataclass(frozen=True, slots=True)
class ImportTarget:
    audience_id: str
    list_id: int
    data_source_id: int
    id_type: str
    reconciliation_key: str | None
    key_transform: str


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run_id: uuid.UUID
    audience_id: str
    state: RunState
    counts: dict[str, int]
    match_rate: dict[str, float] | None
    reason: str | None


def _storable(invalid_id: str) -> str:
    """An ID as Postgres text can hold it: NUL cannot be stored (a NUL byte in a platform file's user id
    would otherwise fail the whole batch). Only invalid IDs can hold one; they are kept with U+FFFD instead."""
    return invalid_id.replace("\x00", "\ufffd")


def _unmatched_reason(id_type: str) -> str:
    return "unknown_ecid" if id_type == "ecid" else "unknown_declared_id"


# Invalid IDs of a batch's adds (``$4``) are kept, with their reason, like unmatched ones.
_KEEP_INVALID = """INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id)
    SELECT DISTINCT $1::text, $2::text, i, 'invalid_format', $3::uuid FROM unnest($4::text[]) AS i
    ON CONFLICT (audience_id, id_type, id)
    DO UPDATE SET reason = EXCLUDED.reason, run_id = EXCLUDED.run_id, last_seen = now()"""


def _valid(ids: list[str], invalid: set[str]) -> list[str]:
    return [i for i in ids if i not in invalid] if invalid else ids


async def _copy_ids(
    conn: Connection, table: str, columns: tuple[str, ...], groups: Sequence[tuple[str, list[str]]]
) -> None:
    """COPY IDs into ``table``: per group, a row per ID after the group's value of the first column. As text
    built by joins: a tuple and a binary encoding per ID were most of staging a large snapshot."""
    data = b"".join(copy_rows_sharing_columns([first], ids) for first, ids in groups if ids)
    if data:
        # A memoryview: asyncpg would take bytes for a file's path.
        await conn.copy_to_table(table, source=memoryview(data), columns=columns, format="text")


def _affected(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 42`` or ``DELETE 7``."""
    return int(status.rsplit(" ", 1)[-1])


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


def _pick(target: ImportTarget, ecid: str, declared: dict[tuple[str, str], str]) -> str:
    if target.id_type == "ecid":
        return ecid
    sql = declared.get((target.reconciliation_key or "", target.key_transform))
    if sql is None:
        raise PermanentError(
            "unsupported reconciliation key", key=target.reconciliation_key, transform=target.key_transform
        )
    return sql


def match_join(target: ImportTarget) -> str:
    """SQL yielding (id, is_add, recipient_id) for the IDs of ``batch_ids`` that match a recipient."""
    return _pick(target, _ECID_MATCH, _DECLARED_MATCH)


def snapshot_join(target: ImportTarget) -> str:
    """SQL yielding (id, recipient_id or NULL) for every ID of ``snapshot_ids`` (a run's distinct staged IDs)."""
    return _pick(target, _ECID_SNAPSHOT, _DECLARED_SNAPSHOT)


async def load_target(conn: Connection, audience_id: str) -> ImportTarget:
    row = await conn.fetchrow(
        """SELECT sa.audience_id, sa.list_id, ds.data_source_id, ds.id_type, ds.reconciliation_key, ds.key_transform
             FROM shared_audience sa JOIN data_source ds USING (data_source_id)
            WHERE sa.audience_id = $1 AND sa.direction = 'import'""",
        audience_id,
    )
    if row is None or row["list_id"] is None:
        raise PermanentError("no import audience with this id", audience_id=audience_id)
    return ImportTarget(**dict(row))


async def _ensure_temp_tables(conn: Connection) -> None:
    # Per connection, emptied at each commit: a delta batch's IDs and, once joined, its matches; a full
    # snapshot's IDs with their matches when its run ends.
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS batch_ids (id text NOT NULL, is_add boolean NOT NULL)
               ON COMMIT DELETE ROWS;
           CREATE TEMP TABLE IF NOT EXISTS batch_matches (id text NOT NULL, is_add boolean NOT NULL,
               recipient_id bigint NOT NULL) ON COMMIT DELETE ROWS;
           CREATE TEMP TABLE IF NOT EXISTS snapshot_match (id text NOT NULL, recipient_id bigint)
               ON COMMIT DELETE ROWS"""
    )


class Importer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        status: StatusReporter,
        guards: ImportGuards,
        metrics: ReconcileMetrics | None = None,
        *,
        work_mem_mb: int = DEFAULT_WORK_MEM_MB,
        concurrency: int = 4,
    ) -> None:
        self._pool = pool
        self._status = status
        self._guards = guards
        self._metrics: ReconcileMetrics = metrics or NoReconcileMetrics()
        self._work_mem_mb = work_mem_mb
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def handle(self, deliveries: Sequence[Delivery[AudienceMembership]]) -> list[Rejected]:
        """Apply a poll's batches: each audience's in order, different audiences side by side (their lists
        differ, and a run's end, matching a whole snapshot, can take a while: another audience's run must
        not wait for it). The first unexpected error cancels the others; the poll is then retried, and
        what was committed meanwhile is skipped by ``applied_batch``."""
        by_audience: dict[str, list[Delivery[AudienceMembership]]] = {}
        for delivery in deliveries:
            by_audience.setdefault(delivery.message.audience_id, []).append(delivery)

        async def one(group: list[Delivery[AudienceMembership]]) -> list[Rejected]:
            # Shared by every call (partitions are handled side by side too): a bound on connections in use.
            async with self._slots:
                return await self._handle_in_order(group)

        if len(by_audience) == 1:
            return await one(list(deliveries))

        try:
            async with asyncio.TaskGroup() as tasks:
                running = [tasks.create_task(one(group)) for group in by_audience.values()]
        except BaseExceptionGroup as failed:
            # The consumer retries or dead-letters by the error's type: hand it the first one as it was.
            raise failed.exceptions[0] from None
        return [rejection for task in running for rejection in task.result()]

    async def _handle_in_order(self, deliveries: Sequence[Delivery[AudienceMembership]]) -> list[Rejected]:
        rejected: list[Rejected] = []
        for delivery in deliveries:
            batch = delivery.message
            try:
                outcome = await self.apply(batch)
            except PermanentError as exc:
                rejected.append(Rejected(delivery, exc))
                self._metrics.run_finished("import", "failed", batch.run_id)
                await self._status.report(
                    batch.run_id,
                    direction="import",
                    state="failed",
                    audience_id=batch.audience_id,
                    reason=str(exc),
                )
                continue
            if outcome is not None:
                await self._status.report(
                    outcome.run_id,
                    direction="import",
                    state=outcome.state,
                    audience_id=outcome.audience_id,
                    counts=outcome.counts,
                    match_rate=outcome.match_rate,
                    reason=outcome.reason,
                )
        return rejected

    async def apply(self, batch: AudienceMembership) -> RunOutcome | None:
        """Apply one batch; returns the run's state to report (None: nothing new to say)."""
        applied = await self._apply_in_transaction(batch)
        if applied is None:
            return None
        counts, outcome, finished = applied
        # Measured only now that the transaction committed: a retried batch is not counted twice.
        if counts is not None:
            self._metrics.import_batch(batch.id_type, counts)
        if finished and outcome is not None:
            if batch.mode == "full" and outcome.state == "succeeded":
                # A full run's batches change nothing; its snapshot changes the list when the run ends.
                self._metrics.members_changed(outcome.counts.get("added", 0), outcome.counts.get("removed", 0))
            self._metrics.run_finished("import", outcome.state, outcome.run_id)
        return outcome

    async def _apply_in_transaction(
        self, batch: AudienceMembership
    ) -> tuple[dict[str, int] | None, RunOutcome | None, bool] | None:
        """(the batch's counts or None when it was applied before, the outcome to report, whether the run
        ended with this batch), or None when there is nothing to measure or report. The batch that ends a
        full run also counts the snapshot's matched and unmatched IDs (known only once it is matched)."""
        async with self._pool.acquire() as conn, conn.transaction():
            target = await load_target(conn, batch.audience_id)
            if target.id_type != batch.id_type:
                raise PermanentError(
                    "batch id type differs from the audience's data source",
                    audience_id=batch.audience_id,
                    batch_id_type=batch.id_type,
                    data_source_id_type=target.id_type,
                )
            await self._ensure_run(conn, batch, target)
            fresh = await conn.fetchval(
                "INSERT INTO applied_batch (run_id, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING seq",
                batch.run_id,
                batch.seq,
            )
            if fresh is None:
                log.info("batch_already_applied", run_id=str(batch.run_id), seq=batch.seq)
                if not batch.last:
                    return None
                return None, await self._current_outcome(conn, batch.run_id), False
            counts = await self._apply_ids(conn, batch, target)
            row = await conn.fetchrow(
                """UPDATE run SET counts = (SELECT jsonb_object_agg(k, coalesce((counts->>k)::bigint, 0)
                                                      + coalesce(($2::jsonb->>k)::bigint, 0))
                                              FROM jsonb_object_keys(counts || $2::jsonb) AS k),
                                  batches_applied = batches_applied + 1,
                                  last_seq = CASE WHEN $3 THEN $4 ELSE last_seq END,
                                  state = CASE WHEN state = 'started' THEN 'progress' ELSE state END,
                                  updated_at = now()
                    WHERE run_id = $1
                RETURNING counts, batches_applied, last_seq, state""",
                batch.run_id,
                orjson.dumps(counts).decode(),
                batch.last,
                batch.seq,
            )
            assert row is not None
            if row["state"] in ("succeeded", "failed", "blocked"):
                return counts, None, False
            if row["last_seq"] is not None and row["batches_applied"] == row["last_seq"] + 1:
                outcome, matching = await self._finish(conn, batch, target)
                return {**counts, **matching}, outcome, True
            return counts, None, False

    async def _ensure_run(self, conn: Connection, batch: AudienceMembership, target: ImportTarget) -> None:
        await conn.execute(
            """INSERT INTO run (run_id, direction, audience_id, mode, state, data_source_id, list_id, id_type)
               VALUES ($1, 'import', $2, $3, 'started', $4, $5, $6)
               ON CONFLICT (run_id) DO NOTHING""",
            batch.run_id,
            batch.audience_id,
            batch.mode,
            target.data_source_id,
            target.list_id,
            target.id_type,
        )

    async def _apply_ids(self, conn: Connection, batch: AudienceMembership, target: ImportTarget) -> dict[str, int]:
        id_type = batch.id_type
        invalid = invalid_ids(id_type, batch.adds) + invalid_ids(id_type, batch.removes)
        invalid_set = set(invalid)
        counts = {"received": len(batch.adds) + len(batch.removes), "invalid": len(invalid)}
        invalid_adds = [_storable(i) for i in batch.adds if i in invalid_set]
        if invalid_adds:
            await conn.execute(_KEEP_INVALID, batch.audience_id, id_type, batch.run_id, invalid_adds)
        if batch.removes:
            # IDs that left the segment are no longer wanted, matched or not.
            await conn.execute(
                "DELETE FROM unmatched_id WHERE audience_id = $1 AND id_type = $2 AND id = ANY($3::text[])",
                batch.audience_id,
                id_type,
                [_storable(i) for i in batch.removes],
            )
        if batch.mode == "full":
            # Staged as they are; matched, counted and applied with the whole snapshot when the run ends.
            # (A full snapshot has no removals: absence is what removes.)
            staged = _valid(batch.adds, invalid_set)
            if staged:
                await _copy_ids(conn, "import_stage_id", ("run_id", "id"), [(str(batch.run_id), staged)])
            return counts
        adds, removes = _valid(batch.adds, invalid_set), _valid(batch.removes, invalid_set)
        await _ensure_temp_tables(conn)
        await _copy_ids(conn, "batch_ids", ("is_add", "id"), [("t", adds), ("f", removes)])
        # A batch is small next to the identity tables: probing their indexes per ID is always right, but the
        # planner, blind to what computing a declared key costs, may prefer hashing every recipient instead.
        await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        await conn.execute("INSERT INTO batch_matches (id, is_add, recipient_id) " + match_join(target))
        await conn.execute("SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on")
        counts["matched"] = await conn.fetchval("SELECT count(DISTINCT id) FROM batch_matches")
        # Distinct IDs: a user listed twice (a duplicate line in a platform file) is one ID, matched or not.
        counts["unmatched"] = len({*adds, *removes}) - counts["matched"]
        # Unmatched adds are kept (re-matched later). DISTINCT: an ID twice in one batch would make the upsert
        # touch a row twice, which Postgres refuses.
        await conn.execute(
            """INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id)
                SELECT DISTINCT $1::text, $2::text, b.id, $3::text, $4::uuid FROM batch_ids b
                 WHERE b.is_add AND NOT EXISTS (SELECT 1 FROM batch_matches m WHERE m.id = b.id)
                ON CONFLICT (audience_id, id_type, id)
                DO UPDATE SET reason = EXCLUDED.reason, run_id = EXCLUDED.run_id, last_seen = now()""",
            batch.audience_id,
            id_type,
            _unmatched_reason(id_type),
            batch.run_id,
        )
        added = await conn.execute(
            """INSERT INTO list_member (list_id, recipient_id)
                SELECT DISTINCT $1::bigint, m.recipient_id FROM batch_matches m WHERE m.is_add
                ON CONFLICT DO NOTHING""",
            target.list_id,
        )
        removed = await conn.execute(
            """DELETE FROM list_member lm
                 WHERE lm.list_id = $1
                   AND lm.recipient_id IN (SELECT m.recipient_id FROM batch_matches m WHERE NOT m.is_add)""",
            target.list_id,
        )
        counts["added"] = _affected(added)
        counts["removed"] = _affected(removed)
        return counts

    async def _finish(
        self, conn: Connection, batch: AudienceMembership, target: ImportTarget
    ) -> tuple[RunOutcome, dict[str, int]]:
        """End the run; returns its outcome and, for a full run, the snapshot's matched/unmatched counts."""
        matching: dict[str, int] = {}
        if batch.mode == "full":
            matching = await match_snapshot(conn, batch.run_id, target, work_mem_mb=self._work_mem_mb)
            await conn.execute(
                """UPDATE run SET counts = counts || jsonb_build_object('matched', $2::bigint, 'unmatched', $3::bigint)
                    WHERE run_id = $1""",
                batch.run_id,
                matching["matched"],
                matching["unmatched"],
            )
            held = await self._guard_reason(conn, target.list_id, matching["matched"])
            if held is not None:
                await conn.execute(
                    "UPDATE run SET state = 'blocked', reason = $2, updated_at = now() WHERE run_id = $1",
                    batch.run_id,
                    held,
                )
                return await self._current_outcome(conn, batch.run_id), matching
            added, removed = await apply_snapshot(conn, batch.run_id, target.list_id, batch.audience_id)
            await conn.execute(
                """UPDATE run SET counts = counts || jsonb_build_object('added', $2::bigint, 'removed', $3::bigint)
                    WHERE run_id = $1""",
                batch.run_id,
                added,
                removed,
            )
        await conn.execute(
            "UPDATE run SET state = 'succeeded', finished_at = now(), updated_at = now() WHERE run_id = $1",
            batch.run_id,
        )
        return await self._current_outcome(conn, batch.run_id), matching

    async def _guard_reason(self, conn: Connection, list_id: int, matched: int) -> str | None:
        """Why the matched snapshot (in ``snapshot_match``) must be held back, if it must."""
        if matched == 0:
            return "empty full snapshot: held back (release it with `audience-bridge release`)"
        current = await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", list_id)
        if current < self._guards.min_list_size:
            return None
        leaving = await conn.fetchval(
            """SELECT count(*) FROM list_member lm
                WHERE lm.list_id = $1
                  AND NOT EXISTS (SELECT 1 FROM snapshot_match s WHERE s.recipient_id = lm.recipient_id)""",
            list_id,
        )
        if leaving > self._guards.max_removal_share * current:
            return (
                f"full snapshot would remove {leaving} of {current} list members "
                f"(more than {self._guards.max_removal_share:.0%}): held back (release it with "
                "`audience-bridge release`)"
            )
        return None

    async def _current_outcome(self, conn: Connection, run_id: uuid.UUID) -> RunOutcome:
        return await run_outcome(conn, run_id)


async def run_outcome(conn: Connection, run_id: uuid.UUID) -> RunOutcome:
    row = await conn.fetchrow(
        "SELECT run_id, audience_id, state, counts, reason, id_type FROM run WHERE run_id = $1", run_id
    )
    if row is None:
        raise PermanentError("unknown run", run_id=str(run_id))
    counts = {k: int(v) for k, v in orjson.loads(row["counts"]).items()}
    received_valid = counts.get("received", 0) - counts.get("invalid", 0)
    match_rate = None
    if row["id_type"] is not None and received_valid > 0:
        match_rate = {row["id_type"]: round(counts.get("matched", 0) / received_valid, 4)}
    if match_rate is not None:
        await conn.execute(
            "UPDATE run SET match_rate = $2::jsonb WHERE run_id = $1",
            run_id,
            orjson.dumps(match_rate).decode(),
        )
    return RunOutcome(
        run_id=row["run_id"],
        audience_id=row["audience_id"],
        state=row["state"],
        counts=counts,
        match_rate=match_rate,
        reason=row["reason"],
    )


async def _no_nested_loops(conn: Connection) -> None:
    """For the rest of the transaction: whole-snapshot statements hash their joins. The staged and the
    temporary tables fill and empty with every run, so their statistics are often those of an empty table;
    trusting them, the planner once nested-looped a 200,000-member list over a 120,000-row snapshot for
    minutes (chaos scenario). A hash join is linear whatever the estimates say."""
    await conn.execute("SET LOCAL enable_nestloop = off")


async def match_snapshot(
    conn: Connection, run_id: uuid.UUID, target: ImportTarget, *, work_mem_mb: int = DEFAULT_WORK_MEM_MB
) -> dict[str, int]:
    """Match every ID staged for a full run, in one pass, into ``snapshot_match`` (for the rest of the
    transaction); keep the unmatched ones. Returns the distinct IDs matched and unmatched."""
    await _ensure_temp_tables(conn)
    await _no_nested_loops(conn)
    # Room to hash the snapshot's IDs in memory rather than in batches on disk.
    await conn.execute("SELECT set_config('work_mem', $1, true)", f"{int(work_mem_mb)}MB")
    await conn.execute("TRUNCATE snapshot_match")
    # The distinct IDs are counted on the way (an ID may match several recipients, two sharing an e-mail:
    # counting them afterwards took a second pass over the matches).
    ids = await conn.fetchval(
        "WITH snapshot_ids AS MATERIALIZED (SELECT DISTINCT id FROM import_stage_id WHERE run_id = $1), "  # noqa: S608
        "matched AS (INSERT INTO snapshot_match (id, recipient_id) " + snapshot_join(target) + ") "
        "SELECT count(*) FROM snapshot_ids",
        run_id,
    )
    # Kept: those kept before are refreshed, the others added in the key's order (appended to its index rather
    # than landing all over it). Two plain statements: ON CONFLICT's speculative insertion cost half as much
    # again per ID. Only this audience's runs, one at a time, add its unmatched IDs; should anything else add
    # one meanwhile, the key says so and the whole is retried.
    args = (target.audience_id, target.id_type, _unmatched_reason(target.id_type), run_id)
    refreshed = await conn.execute(
        """UPDATE unmatched_id u SET reason = $3, run_id = $4, last_seen = now()
             FROM snapshot_match s
            WHERE s.recipient_id IS NULL AND u.audience_id = $1 AND u.id_type = $2 AND u.id = s.id""",
        *args,
    )
    try:
        added = await conn.execute(
            """INSERT INTO unmatched_id (audience_id, id_type, id, reason, run_id)
                SELECT $1::text, $2::text, s.id, $3::text, $4::uuid FROM snapshot_match s
                 WHERE s.recipient_id IS NULL
                   AND NOT EXISTS (SELECT 1 FROM unmatched_id u
                                    WHERE u.audience_id = $1 AND u.id_type = $2 AND u.id = s.id)
                 ORDER BY s.id""",
            *args,
        )
    except asyncpg.UniqueViolationError as exc:
        raise TransientError("unmatched IDs were kept concurrently", audience_id=target.audience_id) from exc
    unmatched = _affected(refreshed) + _affected(added)
    # Each unmatched ID is one row (the LEFT JOIN's NULL): the others matched.
    return {"matched": ids - unmatched, "unmatched": unmatched}


async def apply_snapshot(conn: Connection, run_id: uuid.UUID, list_id: int, audience_id: str) -> tuple[int, int]:
    """Replace ``list_id``'s membership with the matched snapshot (:func:`match_snapshot`, same transaction)
    and drop the run's staged IDs; returns (added, removed)."""
    await _no_nested_loops(conn)
    # Leavers first: the insert's look-up of what the list lacks then reads fewer members.
    removed = await conn.execute(
        """DELETE FROM list_member lm
            WHERE lm.list_id = $1
              AND NOT EXISTS (SELECT 1 FROM snapshot_match s WHERE s.recipient_id = lm.recipient_id)""",
        list_id,
    )
    # Only the members the list lacks, each once, in the list's key order (sorted inserts append to the primary
    # key instead of landing all over it). A plain insert: ON CONFLICT's speculative insertion cost a third
    # more per row. Another transaction adding one of them meanwhile (re-matching, the campaign) makes it
    # fail on the key: retried then, from the start.
    try:
        added = await conn.execute(
            """INSERT INTO list_member (list_id, recipient_id)
               SELECT DISTINCT $1::bigint, s.recipient_id FROM snapshot_match s
                WHERE s.recipient_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM list_member lm
                                   WHERE lm.list_id = $1 AND lm.recipient_id = s.recipient_id)
                ORDER BY 2""",
            list_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise TransientError("list members were added concurrently", list_id=list_id) from exc
    await conn.execute("DELETE FROM import_stage_id WHERE run_id = $1", run_id)
    # A full snapshot is the whole truth: unmatched IDs it no longer names have left the segment.
    await conn.execute("DELETE FROM unmatched_id WHERE audience_id = $1 AND run_id <> $2", audience_id, run_id)
    return _affected(added), _affected(removed)


async def release_run(conn: Connection, run_id: uuid.UUID, released_by: str) -> RunOutcome:
    """Apply a full snapshot that the guards held back, on an operator's say-so."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT audience_id, list_id, state FROM run WHERE run_id = $1 AND direction = 'import' FOR UPDATE",
            run_id,
        )
        if row is None:
            raise PermanentError("no import run with this id", run_id=str(run_id))
        if row["state"] != "blocked":
            raise PermanentError("only a blocked run can be released", run_id=str(run_id), state=row["state"])
        # Matched again, against the recipients of now: its unmatched IDs were kept when it was held back.
        await match_snapshot(conn, run_id, await load_target(conn, row["audience_id"]))
        added, removed = await apply_snapshot(conn, run_id, row["list_id"], row["audience_id"])
        await conn.execute(
            """UPDATE run SET state = 'succeeded', released_by = $2, finished_at = now(), updated_at = now(),
                      counts = counts || jsonb_build_object('added', $3::bigint, 'removed', $4::bigint)
                WHERE run_id = $1""",
            run_id,
            released_by,
            added,
            removed,
        )
        return await run_outcome(conn, run_id)
