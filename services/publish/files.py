"""A complete run's inbound data files, streamed from Postgres into the export drop zone.

Memory stays flat in the size of the run: for each file set the plan needs one aggregate (row count and
longest line), then a server-side cursor feeds the parts in blocks of ``FETCH_ROWS`` rows, each part being
encoded (gzip) on the fly and uploaded atomically under its final name. The pre-count and the cursor run
in one REPEATABLE READ transaction, so they see the same rows.

Names are fixed per run (DPID, the run's file timestamp, mode, part), so writing again replaces the same
objects. Each uploaded part is recorded in ``published_file``; a later attempt (a redelivered last batch
after a crash, a retry after the zone was down) skips the parts already recorded with the same line count
and writes only the rest, and removes parts an earlier attempt planned but this one does not. A crash
between an upload and its record makes the next attempt upload that one part again, under the same name
and with the same lines: it replaces the object, or is a repeat the platform applies to the same effect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from services.publish.metrics import PublishMetrics
from services.publish.plan import (
    OTHER_TRAIT_FIXED_BYTES,
    FileSet,
    PartEncoder,
    PartPlan,
    file_sets,
    object_key,
    overwrite_block,
    overwrite_overhead,
    plan_parts,
    sync_block,
    sync_overhead,
)
from services.publish.settings import DEFAULT_EXPORT_PARTNER, PublishSettings
from services.publish.stage import ExportRun
from shared.dropzone import DropZone, DropZoneUnavailable
from shared.errors import PermanentError
from shared.formats.inbound import DEFAULT_MAX_PART_BYTES, InboundFileName
from shared.logging import get_logger
from shared.retry import Backoff

log = get_logger(__name__)

FETCH_ROWS: Final = 20_000  # rows per cursor round trip: a few MB of lines at most

Record = Any  # asyncpg.Record


@dataclass(frozen=True, slots=True)
class FileOptions:
    """How a run's files are written (from the settings; the defaults are the settings' defaults)."""

    partner: str = DEFAULT_EXPORT_PARTNER
    max_part_bytes: int = DEFAULT_MAX_PART_BYTES
    gzip: bool = True
    gzip_level: int = 1
    write_attempts: int = 3
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: PublishSettings) -> FileOptions:
        return cls(
            partner=settings.export_partner_folder,
            max_part_bytes=settings.export_max_part_bytes,
            gzip=settings.export_gzip,
            gzip_level=settings.export_gzip_level,
            write_attempts=settings.export_write_attempts,
            backoff_initial_s=settings.retry_backoff_initial_s,
            backoff_max_s=settings.retry_backoff_max_s,
        )


@dataclass(slots=True)
class WrittenFiles:
    """What writing a run's files did: object keys written now, and those already there from before."""

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed_stale: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return sorted([*self.written, *self.kept])


class PlanChanged(PermanentError):
    """The cursor ended before the plan's line count: cannot happen within one snapshot."""


# Rows of a .sync set in the order of publish_stage's index (run_id, is_add, id): removes first, each group
# by id. Three fixed texts rather than one with an optional filter, so the planner can walk the index
# (no sort) for a cursor. The plan counts the same rows with a hash aggregate.
_SYNC_FILTER: Final = {"changes": "", "adds": " AND is_add", "removes": " AND NOT is_add"}
_SYNC_ROWS: Final = {
    rows: f"SELECT DISTINCT is_add, id FROM publish_stage WHERE run_id = $1{cond} ORDER BY is_add, id"  # noqa: S608
    for rows, cond in _SYNC_FILTER.items()
}
_SYNC_PLAN: Final = {
    rows: "SELECT count(*) AS n, coalesce(max(octet_length(id)), 0) AS variable FROM "  # noqa: S608
    f"(SELECT is_add, id FROM publish_stage WHERE run_id = $1{cond} GROUP BY is_add, id) q"
    for rows, cond in _SYNC_FILTER.items()
}

# Rows of an .overwrite set: (id, the traits of the data source's other export audiences holding it).
# Set-wise: the run's adds joined once with what the bridge exported to the same users through those
# audiences (exported_member), never a query per user.
_OVERWRITE_WITH = """
WITH adds AS (SELECT DISTINCT id FROM publish_stage WHERE run_id = $1 AND is_add),
others AS (
    SELECT em.id, array_agg(DISTINCT sa.platform_trait_id ORDER BY sa.platform_trait_id) AS traits,
           sum($5::int + length(sa.platform_trait_id::text)) AS extra_bytes
      FROM exported_member em
      JOIN shared_audience sa ON sa.audience_id = em.audience_id
     WHERE sa.direction = 'export' AND sa.data_source_id = $2 AND sa.audience_id <> $3
       AND sa.platform_trait_id IS NOT NULL AND sa.platform_trait_id <> $4
       AND em.id IN (SELECT id FROM adds)
     GROUP BY em.id)
"""
_OVERWRITE_ROWS: Final = (
    _OVERWRITE_WITH + "SELECT a.id, o.traits AS others FROM adds a LEFT JOIN others o USING (id) ORDER BY a.id"  # noqa: S608
)
_OVERWRITE_PLAN: Final = (
    _OVERWRITE_WITH
    + "SELECT count(*) AS n, coalesce(max(octet_length(a.id) + coalesce(o.extra_bytes, 0)), 0) AS variable "
    "FROM adds a LEFT JOIN others o USING (id)"
)


@dataclass(frozen=True, slots=True)
class _SetQuery:
    """How to plan, read and render one file set's rows."""

    plan: str
    rows: str
    args: tuple[Any, ...]
    overhead: int  # bytes of every line besides the plan's ``variable`` (the id, other audiences' traits)
    render: Callable[[Sequence[Record]], bytes]  # a block of rows -> their lines


def _set_query(fs: FileSet, run: ExportRun, trait: int) -> _SetQuery:
    if fs.mode == "overwrite":
        return _SetQuery(
            plan=_OVERWRITE_PLAN,
            rows=_OVERWRITE_ROWS,
            args=(run.run_id, run.data_source_id, run.audience_id, trait, OTHER_TRAIT_FIXED_BYTES),
            overhead=overwrite_overhead(trait),
            render=lambda rows: overwrite_block(((r["id"], r["others"]) for r in rows), trait),
        )
    return _SetQuery(
        plan=_SYNC_PLAN[fs.rows],
        rows=_SYNC_ROWS[fs.rows],
        args=(run.run_id,),
        # A bound: a set holding removes is planned as if every line were one (d_unsid= is the longer).
        overhead=sync_overhead(trait, fs.rows == "adds"),
        render=lambda rows: sync_block(((r["is_add"], r["id"]) for r in rows), trait),
    )


async def _part_chunks(
    cursor: Any, part: PartPlan, render: Callable[[Sequence[Record]], bytes], encoder: PartEncoder
) -> AsyncGenerator[bytes, None]:
    """The part's stored bytes. Postgres produces the next block of rows while this one is formatted and
    compressed (in a worker thread): the part costs about the longer of the two, not their sum."""
    remaining = part.lines
    pending = asyncio.ensure_future(cursor.fetch(min(FETCH_ROWS, remaining)))
    try:
        while remaining > 0:
            rows = await pending
            if not rows:
                raise PlanChanged("the run's rows ended before the planned part did", part=part.name.name)
            remaining -= len(rows)
            if remaining > 0:
                pending = asyncio.ensure_future(cursor.fetch(min(FETCH_ROWS, remaining)))
            out = await asyncio.to_thread(encoder.add, render(rows))
            if out:
                yield out
        tail = encoder.finish()
        if tail:
            yield tail
    finally:
        # Abandoned half-way (the zone failed): the connection must be idle again before its transaction
        # ends, so the fetch in flight is awaited (or cancelled) here.
        if not pending.done():
            pending.cancel()
        await asyncio.wait([pending])  # never raises the fetch's error; our own cancellation still does
        if not pending.cancelled():
            pending.exception()  # retrieved: a failed prefetch is moot once the part is abandoned


async def write_run_files(
    pool: asyncpg.Pool,
    zone: DropZone,
    run: ExportRun,
    *,
    trait: int,
    file_ts: int,
    options: FileOptions,
    metrics: PublishMetrics,
) -> WrittenFiles:
    """Write (or complete) the run's files, retrying an unavailable zone ``options.write_attempts`` times.

    Raises the zone's errors once the attempts are spent, and ``FormatError`` for a line the platform
    could not take; Postgres errors propagate as they are (the caller's batch is retried).
    """
    backoff = Backoff(options.backoff_initial_s, options.backoff_max_s)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _write_once(pool, zone, run, trait=trait, file_ts=file_ts, options=options, metrics=metrics)
        except DropZoneUnavailable as exc:
            if attempt >= options.write_attempts:
                raise
            delay = backoff.next_delay()
            log.warning(
                "export_files_retrying",
                run_id=str(run.run_id),
                attempt=attempt,
                error=str(exc)[:300],
                retry_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)


async def _write_once(
    pool: asyncpg.Pool,
    zone: DropZone,
    run: ExportRun,
    *,
    trait: int,
    file_ts: int,
    options: FileOptions,
    metrics: PublishMetrics,
) -> WrittenFiles:
    rows = await pool.fetch("SELECT name, lines FROM published_file WHERE run_id = $1", run.run_id)
    recorded = {r["name"]: r["lines"] for r in rows}
    result = WrittenFiles()
    planned: set[str] = set()
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for fs in file_sets(run.mode):
            q = _set_query(fs, run, trait)
            stats = await conn.fetchrow(q.plan, *q.args)
            assert stats is not None
            if stats["n"] == 0:
                continue
            base = InboundFileName(run.dpid, file_ts, fs.mode, gzip=options.gzip)
            parts = plan_parts(base, stats["n"], stats["variable"] + q.overhead, options.max_part_bytes)
            cursor = await conn.cursor(q.rows, *q.args)
            for part in parts:
                key = object_key(options.partner, part.name)
                planned.add(key)
                if recorded.get(key) == part.lines:
                    await cursor.forward(part.lines)
                    result.kept.append(key)
                    continue
                encoder = PartEncoder(gzip=options.gzip, level=options.gzip_level)
                async with contextlib.aclosing(_part_chunks(cursor, part, q.render, encoder)) as chunks:
                    await zone.write(key, chunks)
                await pool.execute(
                    """INSERT INTO published_file (run_id, name, lines, bytes, md5) VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (run_id, name) DO UPDATE
                       SET lines = EXCLUDED.lines, bytes = EXCLUDED.bytes, md5 = EXCLUDED.md5, written_at = now()""",
                    run.run_id,
                    key,
                    encoder.lines,
                    encoder.stored_bytes,
                    encoder.md5,
                )
                metrics.file_written(fs.mode)
                result.written.append(key)
                log.info(
                    "export_file_written",
                    run_id=str(run.run_id),
                    file=key,
                    lines=encoder.lines,
                    bytes=encoder.stored_bytes,
                    content_bytes=encoder.content_bytes,
                )
    # Parts an earlier attempt wrote under a plan this one no longer has (e.g. an .overwrite whose lines
    # grew): left in the zone they would be applied on top of the new ones.
    for key in sorted(set(recorded) - planned):
        await zone.delete(key, missing_ok=True)
        await pool.execute("DELETE FROM published_file WHERE run_id = $1 AND name = $2", run.run_id, key)
        result.removed_stale.append(key)
        log.warning("export_stale_file_removed", run_id=str(run.run_id), file=key)
    return result
