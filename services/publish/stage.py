"""Export batches into Postgres, exactly once, and the run's file timestamp.

Per batch, in one transaction: ``(run_id, seq)`` goes into ``published_batch`` (a redelivered batch
finds it there and changes nothing) and the batch's IDs go into ``publish_stage_batch``, one row per
batch holding them as lines of text (a large run is a hundred rows, not a million); the last batch also
records how many batches the run has and its totals (``publish_run``). A run is complete when every one
of its batches is staged, whatever order or how many times they arrived. The run itself (what reconcile
recorded, and whether a batch agrees with it) is :mod:`services.publish.export_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import orjson

from services.publish.export_run import ExportRun
from shared.db import acquire
from shared.messages import AudienceExportBatch


@dataclass(frozen=True, slots=True)
class Staged:
    fresh: int  # batches staged now; 0: all of them were staged before (redeliveries), nothing changed
    staged_batches: int
    last_seq: int | None

    @property
    def complete(self) -> bool:
        return self.last_seq is not None and self.staged_batches == self.last_seq + 1


def staged_ids(text: str, count: int) -> list[str]:
    """The IDs of a staged ``adds``/``removes`` text (``count`` tells an empty text from one empty ID)."""
    return text.split("\n") if count else []


def max_id_bytes(*groups: list[str]) -> int:
    """The longest ID's UTF-8 length: what the file plan needs to size its parts."""
    longest = 0
    for ids in groups:
        if not ids:
            continue
        if all(i.isascii() for i in ids):  # the usual case: hashes and ECIDs, length = bytes
            longest = max(longest, max(map(len, ids)))
        else:
            longest = max(longest, max(len(i.encode()) for i in ids))
    return longest


async def stage_batches(pool: asyncpg.Pool, batches: Sequence[AudienceExportBatch]) -> Staged:
    """Record batches of one run and stage their IDs, all in one transaction (one commit for a whole
    poll of batches, not one each); batches staged before (redeliveries) are skipped."""
    run_ids = {b.run_id for b in batches}
    if len(run_ids) != 1:
        raise ValueError("stage_batches takes batches of exactly one run")
    (run_id,) = run_ids
    by_seq: dict[int, AudienceExportBatch] = {}
    for batch in batches:
        by_seq.setdefault(batch.seq, batch)  # the same batch twice in one poll: once is enough
    async with acquire(pool) as conn, conn.transaction():
        rows = await conn.fetch(
            """INSERT INTO published_batch (run_id, seq) SELECT $1, unnest($2::integer[])
               ON CONFLICT DO NOTHING RETURNING seq""",
            run_id,
            sorted(by_seq),
        )
        fresh = [by_seq[r["seq"]] for r in rows]
        if fresh:
            await conn.copy_records_to_table(
                "publish_stage_batch",
                records=[
                    (
                        run_id,
                        b.seq,
                        "\n".join(b.adds),
                        "\n".join(b.removes),
                        len(b.adds),
                        len(b.removes),
                        max_id_bytes(b.adds, b.removes),
                    )
                    for b in fresh
                ],
                columns=("run_id", "seq", "adds", "removes", "adds_n", "removes_n", "max_id_bytes"),
            )
        for batch in fresh:
            if batch.last:
                await conn.execute(
                    """INSERT INTO publish_run (run_id, last_seq, totals, dpid) VALUES ($1, $2, $3::jsonb, $4)
                       ON CONFLICT (run_id) DO UPDATE
                       SET last_seq = EXCLUDED.last_seq, totals = EXCLUDED.totals, updated_at = now()""",
                    run_id,
                    batch.seq,
                    orjson.dumps(batch.totals or {}).decode(),
                    batch.dpid,
                )
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM published_batch WHERE run_id = $1) AS staged,
                      (SELECT last_seq FROM publish_run WHERE run_id = $1) AS last_seq""",
            run_id,
        )
        assert row is not None
        return Staged(fresh=len(fresh), staged_batches=row["staged"], last_seq=row["last_seq"])


async def allocate_file_ts(pool: asyncpg.Pool, run: ExportRun, start: int) -> int:
    """The run's file timestamp: chosen once (then always the same), the first second from ``start``
    that no other run of the same DPID uses."""
    while True:
        async with acquire(pool) as conn, conn.transaction():
            existing = await conn.fetchval("SELECT file_ts FROM publish_run WHERE run_id = $1 FOR UPDATE", run.run_id)
            if existing is not None:
                return int(existing)
            taken = await conn.fetch(
                "SELECT file_ts FROM publish_run WHERE dpid = $1 AND file_ts >= $2 AND file_ts < $2 + 10000",
                run.dpid,
                start,
            )
            used = {r["file_ts"] for r in taken}
            candidate = next(ts for ts in range(start, start + 10_001) if ts not in used)
            try:
                async with conn.transaction():
                    await conn.execute(
                        """INSERT INTO publish_run (run_id, dpid, file_ts) VALUES ($1, $2, $3)
                           ON CONFLICT (run_id) DO UPDATE SET dpid = EXCLUDED.dpid, file_ts = EXCLUDED.file_ts,
                                                             updated_at = now()""",
                        run.run_id,
                        run.dpid,
                        candidate,
                    )
            except asyncpg.UniqueViolationError:
                # Another run of this DPID took the same second meanwhile: look again.
                continue
            return candidate
