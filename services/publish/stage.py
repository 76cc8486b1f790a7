"""Export batches into Postgres, exactly once: the run they belong to, and staging their IDs.

Per batch, in one transaction: ``(run_id, seq)`` goes into ``published_batch`` (a redelivered batch
finds it there and changes nothing) and the batch's IDs go into ``publish_stage_batch``, one row per
batch holding them as lines of text (a large run is a hundred rows, not a million); the last batch also
records how many batches the run has and its totals (``publish_run``). A run is complete when every one
of its batches is staged, whatever order or how many times they arrived.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from shared.errors import PermanentError
from shared.messages import AudienceExportBatch, ExportMode

Connection = Any  # asyncpg.Connection or a pool's proxy of one

# States in which publish still works on a run by itself; a failed run waits for `retry_run`.
LIVE_STATES = frozenset({"started", "progress"})
TERMINAL_STATES = frozenset({"succeeded", "failed"})


class BatchRefused(PermanentError):
    """The batch cannot be published as sent (unknown run or audience, inconsistent with its run)."""


@dataclass(frozen=True, slots=True)
class ExportRun:
    """An export run as reconcile recorded it, with its audience and data source."""

    run_id: uuid.UUID
    audience_id: str
    audience_name: str
    mode: ExportMode
    state: str
    reason: str | None
    started_at: datetime
    counts: dict[str, int]
    data_source_id: int
    dpid: int
    trait_id: int | None
    segment_id: int | None
    staged_batches: int
    last_seq: int | None
    totals: dict[str, int] | None
    file_ts: int | None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def complete(self) -> bool:
        return self.last_seq is not None and self.staged_batches == self.last_seq + 1


_LOAD_RUN = """
SELECT r.run_id, r.direction, r.audience_id, r.mode, r.state, r.reason, r.started_at, r.counts,
       r.data_source_id AS run_data_source_id, r.dpid AS run_dpid,
       sa.audience_id AS sa_audience_id, sa.name AS audience_name, sa.direction AS sa_direction,
       sa.platform_trait_id, sa.platform_segment_id,
       ds.data_source_id, ds.dpid,
       (SELECT count(*) FROM published_batch pb WHERE pb.run_id = r.run_id) AS staged_batches,
       pr.last_seq, pr.totals, pr.file_ts
  FROM run r
  LEFT JOIN shared_audience sa ON sa.audience_id = r.audience_id
  LEFT JOIN data_source ds ON ds.data_source_id = coalesce(r.data_source_id, sa.data_source_id)
  LEFT JOIN publish_run pr ON pr.run_id = r.run_id
 WHERE r.run_id = $1
"""


def _int_map(raw: Any) -> dict[str, int]:
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


async def load_run(conn: Connection | asyncpg.Pool, run_id: uuid.UUID) -> ExportRun | None:
    """The export run, or None when no run row exists. Raises :class:`BatchRefused` when the row exists
    but is not an export run publish can serve (wrong direction, no export audience or data source)."""
    row = await conn.fetchrow(_LOAD_RUN, run_id)
    if row is None:
        return None
    if row["direction"] != "export":
        raise BatchRefused("the run is not an export run", run_id=str(run_id), direction=row["direction"])
    if row["sa_audience_id"] is None or row["sa_direction"] != "export":
        raise BatchRefused("the run's audience is not an export audience", audience_id=row["audience_id"])
    if row["data_source_id"] is None:
        raise BatchRefused("the run's data source is unknown", audience_id=row["audience_id"])
    if row["run_dpid"] is not None and row["run_dpid"] != row["dpid"]:
        raise BatchRefused("the run's DPID differs from its data source's", run_dpid=row["run_dpid"], dpid=row["dpid"])
    if row["mode"] not in ("append", "mirror", "full"):
        raise BatchRefused("the run's mode is not an export mode", mode=row["mode"])
    return ExportRun(
        run_id=row["run_id"],
        audience_id=row["audience_id"],
        audience_name=row["audience_name"],
        mode=row["mode"],
        state=row["state"],
        reason=row["reason"],
        started_at=row["started_at"],
        counts=_int_map(row["counts"]),
        data_source_id=row["data_source_id"],
        dpid=row["dpid"],
        trait_id=row["platform_trait_id"],
        segment_id=row["platform_segment_id"],
        staged_batches=row["staged_batches"],
        last_seq=row["last_seq"],
        totals=_int_map(row["totals"]) if row["totals"] is not None else None,
        file_ts=row["file_ts"],
    )


def check_batch(run: ExportRun, batch: AudienceExportBatch) -> None:
    """A batch must agree with the run reconcile recorded; anything else is a bug upstream, not a retry."""
    if batch.audience_id != run.audience_id:
        raise BatchRefused("the batch's audience differs from its run's", batch=batch.audience_id, run=run.audience_id)
    if batch.dpid != run.dpid:
        raise BatchRefused("the batch's DPID differs from its data source's", batch=batch.dpid, run=run.dpid)
    if batch.mode != run.mode:
        raise BatchRefused("the batch's mode differs from its run's", batch=batch.mode, run=run.mode)
    if run.last_seq is not None and batch.seq > run.last_seq:
        raise BatchRefused("the batch comes after its run's last batch", seq=batch.seq, last_seq=run.last_seq)


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
    async with pool.acquire() as conn, conn.transaction():
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
        async with pool.acquire() as conn, conn.transaction():
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
