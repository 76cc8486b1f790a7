"""Deleting ended runs and what hangs off them: the run lifecycle's own clean-up, whichever job calls it.

A run's details live in several services' tables (applied and published batches, files, publish progress,
staging); they go with their run, so the deletes are written here, next to the states that say when a run has
ended, rather than in each caller. Blocked runs wait for an operator and live ones are under way: both stay.
"""

from __future__ import annotations

from typing import Any

# Runs whose state no longer changes by itself; `failed` is in (an export retried from staging moves on, but
# its staging is what RUN/STAGING retention bounds: `audience-bridge retry` works until then).
_DONE = "('succeeded', 'partial', 'failed', 'cancelled')"

# Old finished runs, a batch at a time (the per-run tables are keyed by run id first).
_OLD_RUNS_TABLE = "CREATE TEMP TABLE IF NOT EXISTS old_runs (run_id uuid PRIMARY KEY) ON COMMIT DELETE ROWS"
_OLD_RUNS = f"""
INSERT INTO old_runs SELECT run_id FROM run
 WHERE state IN {_DONE} AND finished_at < now() - make_interval(days => $1) LIMIT $2
"""  # noqa: S608 - fixed text
_RUN_DETAILS = (
    "DELETE FROM applied_batch d USING old_runs o WHERE d.run_id = o.run_id",
    "DELETE FROM published_batch d USING old_runs o WHERE d.run_id = o.run_id",
    "DELETE FROM published_file d USING old_runs o WHERE d.run_id = o.run_id",
    "DELETE FROM publish_run d USING old_runs o WHERE d.run_id = o.run_id",
    "DELETE FROM publish_stage_batch d USING old_runs o WHERE d.run_id = o.run_id",
    "DELETE FROM import_stage_batch d USING old_runs o WHERE d.run_id = o.run_id",
)
# export_excluded cascades with its run.
_RUNS = "DELETE FROM run r USING old_runs o WHERE r.run_id = o.run_id"

_STAGING = (
    f"""DELETE FROM import_stage_batch d USING run r WHERE r.run_id = d.run_id AND r.state IN {_DONE}
          AND r.finished_at < now() - make_interval(hours => $1)""",  # noqa: S608 - fixed text
    f"""DELETE FROM publish_stage_batch d USING run r WHERE r.run_id = d.run_id AND r.state IN {_DONE}
          AND r.finished_at < now() - make_interval(hours => $1)""",  # noqa: S608 - fixed text
)


def affected(status: str) -> int:
    """The row count of a command status such as ``DELETE 42``."""
    return int(status.rsplit(" ", 1)[-1])


async def purge_finished_runs(conn: Any, days: int, batch: int) -> int:
    """Runs ended more than ``days`` ago, with their details, ``batch`` runs per transaction; how many went."""
    total = 0
    while True:
        async with conn.transaction():
            await conn.execute(_OLD_RUNS_TABLE)
            chosen = affected(await conn.execute(_OLD_RUNS, days, batch))
            for sql in _RUN_DETAILS:
                await conn.execute(sql)
            await _drop_sets(conn, await conn.fetch(_OLD_RUNS_PREPARED))
            total += affected(await conn.execute(_RUNS))
        if chosen < batch:
            return total


# Recorded sets prepared for export runs (services/publish/recorded_set.py: a table each, kept while a failed
# run may be retried) go with the rest of the run's staging, and with their run; their tables are dropped.
_STALE_PREPARED = f"""
DELETE FROM export_prepared_set p USING run r WHERE r.run_id = p.run_id AND r.state IN {_DONE}
   AND r.finished_at < now() - make_interval(hours => $1)
RETURNING p.table_name
"""  # noqa: S608 - fixed text
_OLD_RUNS_PREPARED = (
    "DELETE FROM export_prepared_set p USING old_runs o WHERE p.run_id = o.run_id RETURNING p.table_name"
)
_DROP_SET_TABLE = "SELECT exported_member_drop_table($1)"


async def purge_staging(conn: Any, hours: int) -> int:
    """Staged IDs and batches, and prepared sets, of runs ended more than ``hours`` ago; how many rows went."""
    staged = sum([affected(await conn.execute(sql, hours)) for sql in _STAGING])
    async with conn.transaction():
        return staged + await _drop_sets(conn, await conn.fetch(_STALE_PREPARED, hours))


async def _drop_sets(conn: Any, rows: list[Any]) -> int:
    """The tables of the prepared sets just deleted (in the caller's transaction, so both go or neither)."""
    for row in rows:
        await conn.execute(_DROP_SET_TABLE, row["table_name"])
    return len(rows)
