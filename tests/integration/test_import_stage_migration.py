"""Migration 026: a full snapshot staged an ID a row (``import_stage_id``) is restaged a row per 10,000 IDs
(``import_stage_batch``), against a real Postgres database; a run in flight then goes on staging."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.migrations import MIGRATIONS_DIR, migrate

pytestmark = pytest.mark.integration


async def test_staged_ids_of_runs_in_flight_are_kept_and_their_next_batches_stage_alongside(
    database_url: str, tmp_path: Path
) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:3]) < 26:
            shutil.copy(path, tmp_path / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, tmp_path)
        big, small = uuid.uuid4(), uuid.uuid4()
        staged = {big: [f"id{i:06d}" for i in range(25_001)], small: ["a\\tb", "x"]}
        for run_id, ids in staged.items():
            await conn.copy_records_to_table(
                "import_stage_id", records=[(run_id, i) for i in ids], columns=("run_id", "id")
            )

        assert 26 in await migrate(conn)

        rows = await conn.fetch("SELECT run_id, seq, cardinality(ids) AS n FROM import_stage_batch ORDER BY 1, 2")
        per_run = {run_id: sorted((r["seq"], r["n"]) for r in rows if r["run_id"] == run_id) for run_id in staged}
        # 10,000 to a row, under negative numbers: the runs' own batches are numbered from 0.
        assert per_run[big] == [(-3, 5_001), (-2, 10_000), (-1, 10_000)]
        assert per_run[small] == [(-1, 2)]
        # The view shows exactly what was staged, an ID a row.
        for run_id, ids in staged.items():
            shown = await conn.fetch("SELECT id FROM import_stage_id WHERE run_id = $1", run_id)
            assert sorted(r["id"] for r in shown) == sorted(ids)
        # The run's next batch (seq 0, as it comes from ingest) stages beside the migrated rows.
        await conn.execute("INSERT INTO import_stage_batch (run_id, seq, ids) VALUES ($1, 0, '{new}')", small)
        assert await conn.fetchval("SELECT count(*) FROM import_stage_id WHERE run_id = $1", small) == 3
        with pytest.raises(asyncpg.exceptions.ObjectNotInPrerequisiteStateError):
            await conn.execute("INSERT INTO import_stage_id (run_id, id) VALUES ($1, 'y')", small)
    finally:
        await conn.close()
