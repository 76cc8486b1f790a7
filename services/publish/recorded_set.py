"""A run's recorded set, prepared while its files are written and swapped in whole by its receipts.

``exported_member`` is partitioned by audience (schemas/sql/030). A run that may replace its audience's whole
set (a full run, or an audience holding nothing yet: its first run) has that set built in a table of its own
while its files are written (:func:`build`): the adds loaded batch after batch, already sorted and distinct (their
primary key, built after the load, checks it; overlapping batches are de-duplicated the long way), then indexed.
The table is no partition yet: no reader sees its rows. When the receipts say every file was applied, the run's
last transaction attaches it as the audience's partition (:func:`swap_in`), dropping the previous one: catalogue
work instead of a million inserts into the live table. That transaction also moves the run to ``succeeded``, so
the run succeeds and its IDs show in ``exported_member`` together, or neither does (a crash before its commit
leaves the set prepared and unattached; the retry attaches it).

Anything else (an incremental run into an audience that holds IDs, a partial receipt, no prepared set, locks not
had within ``SWAP_LOCK_TIMEOUT_MS``) takes the row-by-row recording (:mod:`services.publish.apply_sql`).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any, Final

import asyncpg

from shared.db import acquire
from shared.logging import get_logger

log = get_logger(__name__)

# How long the swap waits for its locks (ACCESS EXCLUSIVE on the default partition while ATTACH checks it; on
# exported_member itself when a full run detaches the audience's previous partition) before recording row by
# row instead: a long reader of exported_member must not stall the run, nor queue every other reader behind it.
SWAP_LOCK_TIMEOUT_MS: Final = 2000

# Building a run's set and ending the run are serialised by this transaction-level lock (its own key space,
# apart from the publisher's per-run session lock): the poller ending the run waits for a build under way, and a
# build that comes after the run ended finds it so and builds nothing (no set is left behind unused).
_RUN_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtext('exported_member_prepare'), hashtext($1::uuid::text))"
# Live (its files being written) or awaiting its receipts: a run ended meanwhile gets no set.
_LIVE: Final = "SELECT state IN ('started', 'progress', 'uploaded') FROM run WHERE run_id = $1 AND direction = 'export'"
_HOLDS_IDS: Final = "SELECT EXISTS (SELECT 1 FROM exported_member WHERE audience_id = $1)"
_PREPARED: Final = "SELECT ids, table_name FROM export_prepared_set WHERE run_id = $1"
_RECORD_PREPARED: Final = (
    "INSERT INTO export_prepared_set (run_id, audience_id, table_name, ids) VALUES ($1, $2, $3, $4)"
)
_SWAPPED: Final = """
INSERT INTO exported_member_partition (audience_id, table_name, run_id) VALUES ($1, $2, $3)
ON CONFLICT (audience_id) DO UPDATE SET table_name = EXCLUDED.table_name, run_id = EXCLUDED.run_id, attached_at = now()
"""
# The run's own prepared set, and those of the audience's older failed or cancelled runs it supersedes.
_DROP_PREPARED: Final = """
DELETE FROM export_prepared_set p
 WHERE p.run_id = $1
    OR p.run_id IN (SELECT run_id FROM run WHERE direction = 'export' AND audience_id = $2
                       AND state IN ('failed', 'cancelled') AND started_at < $3)
RETURNING p.table_name
"""


def table_of(run_id: uuid.UUID) -> str:
    """The name of a run's prepared set (and, once swapped in, of its audience's partition)."""
    return f"exported_member_r{run_id.hex}"


async def build(pool: asyncpg.Pool, run_id: uuid.UUID, audience_id: str, *, full: bool, work_mem_mb: int) -> int | None:
    """Build the run's recorded set apart (once; again it is found), if the run is live and may replace its
    audience's set (``full``, or the audience holds no IDs).

    Returns the IDs it holds, or None when the run records row by row. A Postgres error refusing the build is
    said and leaves the run to the row-by-row recording; losing the connection raises (the batch is retried)."""
    try:
        async with acquire(pool) as conn, conn.transaction():
            await conn.execute(_RUN_LOCK, run_id)
            prepared = await conn.fetchrow(_PREPARED, run_id)
            if prepared is not None:
                return int(prepared["ids"])
            if not await conn.fetchval(_LIVE, run_id):
                return None  # ended already (by the receipts, an operator): nothing will swap it in
            if not full and await conn.fetchval(_HOLDS_IDS, audience_id):
                return None
            # The sort of the adds and the index build, in memory (both for this transaction only).
            await conn.execute(
                "SELECT set_config('work_mem', $1, true), set_config('maintenance_work_mem', $1, true)",
                f"{int(work_mem_mb)}MB",
            )
            table = table_of(run_id)
            conn.add_log_listener(_said)
            try:
                ids = await conn.fetchval("SELECT exported_member_prepare($1, $2, $3)", table, run_id, audience_id)
            finally:
                conn.remove_log_listener(_said)
            await conn.execute(_RECORD_PREPARED, run_id, audience_id, table, ids)
    except asyncpg.PostgresError as exc:
        log.warning("export_recorded_set_not_prepared", run_id=str(run_id), error=str(exc)[:300])
        return None
    log.info("export_recorded_set_prepared", run_id=str(run_id), audience_id=audience_id, ids=ids)
    return int(ids)


async def settle(build: asyncio.Task[int | None] | None, *, cancel: bool = False) -> None:
    """Wait for a recorded set's build begun beside the files (cancelled first when ``cancel``), whatever it
    ends in: the run's own failure is what is reported."""
    if build is None:
        return
    if cancel:
        build.cancel()
    try:
        await build
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not build.cancelled() or (current is not None and current.cancelling()):
            raise  # the caller itself was cancelled (which cancels the build it awaited): it stays cancelled
    except Exception as exc:
        log.warning("export_recorded_set_build_abandoned", error=type(exc).__name__)


def _said(conn: Any, message: asyncpg.PostgresLogMessage) -> None:
    """A notice of the build (overlapping batches de-duplicated the long way, schemas/sql/032), logged."""
    log.warning("export_recorded_set_notice", message=str(message))


async def swap_in(
    conn: Any, run_id: uuid.UUID, audience_id: str, *, full: bool, lock_timeout_ms: int = SWAP_LOCK_TIMEOUT_MS
) -> bool:
    """The audience's recorded set becomes the run's prepared set (inside the run's last transaction).

    False, nothing changed, when the run has none, may not replace the audience's set (an incremental run into
    an audience that holds IDs by now), or the swap's locks or checks fail: the caller records row by row."""
    await conn.execute(_RUN_LOCK, run_id)
    prepared = await conn.fetchrow(_PREPARED, run_id)
    if prepared is None:
        return False
    if not full and await conn.fetchval(_HOLDS_IDS, audience_id):
        return False
    previous = await conn.fetchval("SELECT current_setting('lock_timeout')")
    try:
        async with conn.transaction():  # a savepoint: a refused swap leaves the transaction as it was
            await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{int(lock_timeout_ms)}ms")
            await _swap(conn, run_id, audience_id, prepared["table_name"])
            await conn.execute("SELECT set_config('lock_timeout', $1, true)", previous)
    except asyncpg.PostgresError as exc:
        # Locks not had in time, or the default partition got rows of the audience meanwhile: row by row.
        log.warning("export_recorded_set_not_swapped", run_id=str(run_id), error=str(exc)[:300])
        return False
    log.info("export_recorded_set_swapped_in", run_id=str(run_id), audience_id=audience_id, ids=prepared["ids"])
    return True


async def _swap(conn: Any, run_id: uuid.UUID, audience_id: str, table: str) -> None:
    old = await conn.fetchval("SELECT table_name FROM exported_member_partition WHERE audience_id = $1", audience_id)
    if old is not None:
        await conn.execute("SELECT exported_member_drop_table($1)", old)  # detached, then dropped
    # What is left of the audience is in the default partition (rows recorded before it had one of its own).
    await conn.execute("DELETE FROM exported_member WHERE audience_id = $1", audience_id)
    await conn.execute("SELECT exported_member_attach($1, $2)", table, audience_id)
    await conn.execute(_SWAPPED, audience_id, table, run_id)
    await conn.execute("DELETE FROM export_prepared_set WHERE run_id = $1", run_id)


async def drop_prepared(conn: Any, run_id: uuid.UUID, audience_id: str, started_at: datetime) -> None:
    """The ended run's unused prepared set goes, and those of the older failed runs it supersedes."""
    await conn.execute(_RUN_LOCK, run_id)  # a build under way commits first, and its set goes too
    for row in await conn.fetch(_DROP_PREPARED, run_id, audience_id, started_at):
        await conn.execute("SELECT exported_member_drop_table($1)", row["table_name"])
