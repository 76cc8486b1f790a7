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
            total += affected(await conn.execute(_RUNS))
        if chosen < batch:
            return total


async def purge_staging(conn: Any, hours: int) -> int:
    """Staged IDs and batches of runs ended more than ``hours`` ago; how many rows went."""
    return sum([affected(await conn.execute(sql, hours)) for sql in _STAGING])
