"""A complete run's inbound data files, streamed from Postgres into the export drop zone.

Memory stays flat in the size of the run: for each file set the plan needs one aggregate (row count and
longest line), then a server-side cursor feeds the parts a few staged batches (``.sync``) or
``FETCH_ROWS`` rows (``.overwrite``) at a time, each part being encoded (gzip) on the fly and uploaded
atomically under its final name. The pre-count and the cursor run in one REPEATABLE READ transaction, so
they see the same rows.

Names are fixed per run (DPID, the run's file timestamp, mode, part), so writing again replaces the same
objects. Each uploaded part is recorded in ``published_file``; a later attempt (a redelivered last batch
after a crash, a retry after the zone was down) skips the parts already recorded with the same line count
and writes only the rest, and removes parts an earlier attempt planned but this one does not. A crash
between an upload and its record makes the next attempt upload that one part again, under the same name
and with the same lines: it replaces the object, or is a repeat the platform applies to the same effect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from services.publish.apply_sql import DEFAULT_APPLY_WORK_MEM_MB
from services.publish.encoding import (
    OTHER_TRAIT_FIXED_BYTES,
    PartEncoder,
    overwrite_block,
    overwrite_overhead,
    sync_block,
    sync_overhead,
)
from services.publish.export_run import ExportRun
from services.publish.metrics import PublishMetrics
from services.publish.parts import FileSet, PartPlan, file_sets, object_key, plan_parts
from services.publish.settings import DEFAULT_EXPORT_PARTNER, PublishSettings
from services.publish.stage import staged_ids
from shared.db import acquire
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
    # Then: wait for the platform's receipts (``uploaded``), or count the run applied at once (``succeeded``).
    await_receipts: bool = False
    work_mem_mb: int = DEFAULT_APPLY_WORK_MEM_MB  # recording a run applied at once (EXPORT_RECORD_WORK_MEM_MB)

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
            await_receipts=settings.export_await_receipts,
            work_mem_mb=settings.export_record_work_mem_mb,
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
    """The rows ended before the plan's line count: cannot happen within one snapshot."""


# .sync sets read the staged batches in order, each batch's adds then its removes: the same order on
# every attempt, so a part holds the same lines whenever it is written. The plan adds up the batches'
# sizes and takes their longest ID; nothing is unnested, sorted or de-duplicated (reconcile's diff
# already is distinct).
_SYNC_ARRAYS: Final = {"changes": (True, True), "adds": (True, False), "removes": (False, True)}
_SYNC_PLAN: Final = {
    "changes": "SELECT coalesce(sum(adds_n + removes_n), 0) AS n, "
    "coalesce(max(max_id_bytes), 0) AS variable FROM publish_stage_batch WHERE run_id = $1",
    "adds": "SELECT coalesce(sum(adds_n), 0) AS n, "
    "coalesce(max(max_id_bytes), 0) AS variable FROM publish_stage_batch WHERE run_id = $1",
    "removes": "SELECT coalesce(sum(removes_n), 0) AS n, "
    "coalesce(max(max_id_bytes), 0) AS variable FROM publish_stage_batch WHERE run_id = $1",
}
_SYNC_ROWS: Final = "SELECT adds, removes, adds_n, removes_n FROM publish_stage_batch WHERE run_id = $1 ORDER BY seq"

# Rows of an .overwrite set: (id, the traits of the data source's other export audiences holding it).
# Set-wise: the run's adds joined once with what the bridge exported to the same users through those
# audiences (exported_member), never a query per user.
_OVERWRITE_WITH = """
WITH adds AS (SELECT DISTINCT a.id COLLATE "C" AS id
                FROM publish_stage_batch b, string_to_table(b.adds, E'\\n') AS a(id)
               WHERE b.run_id = $1 AND b.adds_n > 0),
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
STAGED_BATCHES_PER_FETCH: Final = 4  # staged batches per cursor round trip: a few MB of IDs at most


@dataclass(frozen=True, slots=True)
class _Block:
    """Consecutive rows of a file set, and how to render any slice of them as lines."""

    rows: Sequence[Any]
    render: Callable[[Sequence[Any]], bytes]


class _SetRows:
    """A file set's rows in their fixed order, handed out part by part from a server-side cursor.

    The next fetch is in flight while the current block is formatted and compressed (in a worker
    thread), so a part costs about the longer of the two, not their sum."""

    def __init__(self, cursor: Any, fetch: Callable[[Any], Awaitable[tuple[list[_Block], bool]]]) -> None:
        self._cursor = cursor
        self._fetch = fetch
        self._blocks: collections.deque[_Block] = collections.deque()
        self._pending: asyncio.Future[tuple[list[_Block], bool]] | None = None
        self._done = False

    def _prefetch(self) -> None:
        if self._pending is None and not self._done:
            self._pending = asyncio.ensure_future(self._fetch(self._cursor))

    async def _next_block(self) -> _Block | None:
        while not self._blocks:
            if self._done and self._pending is None:
                return None
            self._prefetch()
            assert self._pending is not None
            pending, self._pending = self._pending, None
            blocks, self._done = await pending
            self._blocks.extend(blocks)
        block = self._blocks.popleft()
        if not self._blocks:
            self._prefetch()
        return block

    async def take(self, lines: int, part: str) -> AsyncGenerator[_Block, None]:
        """The next ``lines`` rows, in blocks."""
        remaining = lines
        while remaining > 0:
            block = await self._next_block()
            if block is None:
                raise PlanChanged("the run's rows ended before the planned part did", part=part)
            if len(block.rows) > remaining:
                self._blocks.appendleft(_Block(block.rows[remaining:], block.render))
                block = _Block(block.rows[:remaining], block.render)
            remaining -= len(block.rows)
            yield block

    async def skip(self, lines: int, part: str) -> None:
        async for _ in self.take(lines, part):
            pass

    async def close(self) -> None:
        """The connection must be idle again before its transaction ends: settle the fetch in flight."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if not pending.done():
            pending.cancel()
        await asyncio.wait([pending])  # never raises the fetch's error; our own cancellation still does
        if not pending.cancelled():
            pending.exception()  # retrieved: a failed prefetch is moot once the set is abandoned


@dataclass(frozen=True, slots=True)
class _SetQuery:
    """How to plan and read one file set's rows."""

    plan: str
    plan_args: tuple[Any, ...]
    rows: str
    rows_args: tuple[Any, ...]
    overhead: int  # bytes of every line besides the plan's ``variable`` (the id, other audiences' traits)
    fetch: Callable[[Any], Awaitable[tuple[list[_Block], bool]]]  # cursor -> (blocks, no more rows)


def _set_query(fs: FileSet, run: ExportRun, trait: int) -> _SetQuery:
    if fs.mode == "overwrite":
        overwrite_args = (run.run_id, run.data_source_id, run.audience_id, trait, OTHER_TRAIT_FIXED_BYTES)

        def render_overwrite(rows: Sequence[Record]) -> bytes:
            return overwrite_block(((r["id"], r["others"]) for r in rows), trait)

        async def fetch_overwrite(cursor: Any) -> tuple[list[_Block], bool]:
            rows = await cursor.fetch(FETCH_ROWS)
            return ([_Block(rows, render_overwrite)] if rows else []), len(rows) < FETCH_ROWS

        return _SetQuery(
            plan=_OVERWRITE_PLAN,
            plan_args=overwrite_args,
            rows=_OVERWRITE_ROWS,
            rows_args=overwrite_args,
            overhead=overwrite_overhead(trait),
            fetch=fetch_overwrite,
        )
    with_adds, with_removes = _SYNC_ARRAYS[fs.rows]

    def render_adds(ids: Sequence[str]) -> bytes:
        return sync_block(ids, trait, is_add=True)

    def render_removes(ids: Sequence[str]) -> bytes:
        return sync_block(ids, trait, is_add=False)

    async def fetch_sync(cursor: Any) -> tuple[list[_Block], bool]:
        rows = await cursor.fetch(STAGED_BATCHES_PER_FETCH)
        blocks = []
        for row in rows:
            if with_adds and row["adds_n"]:
                blocks.append(_Block(staged_ids(row["adds"], row["adds_n"]), render_adds))
            if with_removes and row["removes_n"]:
                blocks.append(_Block(staged_ids(row["removes"], row["removes_n"]), render_removes))
        return blocks, len(rows) < STAGED_BATCHES_PER_FETCH

    return _SetQuery(
        plan=_SYNC_PLAN[fs.rows],
        plan_args=(run.run_id,),
        rows=_SYNC_ROWS,
        rows_args=(run.run_id,),
        # A bound: a set holding removes is planned as if every line were one (d_unsid= is the longer).
        overhead=sync_overhead(trait, fs.rows == "adds"),
        fetch=fetch_sync,
    )


async def _part_chunks(rows: _SetRows, part: PartPlan, encoder: PartEncoder) -> AsyncGenerator[bytes, None]:
    """The part's stored bytes. A block is compressed in a worker thread (ISA-L releases the GIL) while the
    next one is formatted here: the part costs about the longer of the two, not their sum."""
    compressing: asyncio.Future[bytes] | None = None
    try:
        async for block in rows.take(part.lines, part.name.name):
            raw = block.render(block.rows)
            if compressing is not None:
                out = await compressing
                compressing = None
                if out:
                    yield out
            compressing = asyncio.ensure_future(asyncio.to_thread(encoder.add, raw))
        if compressing is not None:
            out = await compressing
            compressing = None
            if out:
                yield out
        tail = encoder.finish()
        if tail:
            yield tail
    finally:
        if compressing is not None:  # abandoned (the zone failed): the encoder is dropped with the part
            await asyncio.wait([compressing])
            if not compressing.cancelled():
                compressing.exception()


async def _write_part(
    pool: asyncpg.Pool, zone: DropZone, run: ExportRun, key: str, rows: _SetRows, part: PartPlan, options: FileOptions
) -> None:
    """Upload one part under its final name, then record it (a crash in between: the next attempt uploads
    the same lines again under the same name)."""
    encoder = PartEncoder(gzip=options.gzip, level=options.gzip_level)
    async with contextlib.aclosing(_part_chunks(rows, part, encoder)) as chunks:
        await zone.write(key, chunks)
    await pool.execute(
        """INSERT INTO published_file (run_id, name, lines, bytes, md5, file_set, first_line)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (run_id, name) DO UPDATE
           SET lines = EXCLUDED.lines, bytes = EXCLUDED.bytes, md5 = EXCLUDED.md5, written_at = now(),
               file_set = EXCLUDED.file_set, first_line = EXCLUDED.first_line""",
        run.run_id,
        key,
        encoder.lines,
        encoder.stored_bytes,
        encoder.md5,
        part.name.mode,
        part.first_line,
    )
    log.info(
        "export_file_written",
        run_id=str(run.run_id),
        file=key,
        lines=encoder.lines,
        bytes=encoder.stored_bytes,
        content_bytes=encoder.content_bytes,
    )


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
    async with acquire(pool) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for fs in file_sets(run.mode):
            q = _set_query(fs, run, trait)
            stats = await conn.fetchrow(q.plan, *q.plan_args)
            assert stats is not None
            if stats["n"] == 0:
                continue
            base = InboundFileName(run.dpid, file_ts, fs.mode, gzip=options.gzip)
            parts = plan_parts(base, stats["n"], stats["variable"] + q.overhead, options.max_part_bytes)
            set_rows = _SetRows(await conn.cursor(q.rows, *q.rows_args), q.fetch)
            try:
                for part in parts:
                    key = object_key(options.partner, part.name)
                    planned.add(key)
                    if recorded.get(key) == part.lines:
                        await set_rows.skip(part.lines, part.name.name)
                        result.kept.append(key)
                        continue
                    await _write_part(pool, zone, run, key, set_rows, part, options)
                    metrics.file_written(fs.mode)
                    result.written.append(key)
            finally:
                await set_rows.close()
    # Parts an earlier attempt wrote under a plan this one no longer has (e.g. an .overwrite whose lines
    # grew): left in the zone they would be applied on top of the new ones.
    for key in sorted(set(recorded) - planned):
        await zone.delete(key, missing_ok=True)
        await pool.execute("DELETE FROM published_file WHERE run_id = $1 AND name = $2", run.run_id, key)
        result.removed_stale.append(key)
        log.warning("export_stale_file_removed", run_id=str(run.run_id), file=key)
    return result
