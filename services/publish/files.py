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
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import asyncpg

from services.publish.apply_sql import DEFAULT_APPLY_WORK_MEM_MB
from services.publish.encoding import PartEncoder
from services.publish.export_run import ExportRun
from services.publish.file_set_rows import SetRows, set_query
from services.publish.metrics import PublishMetrics
from services.publish.parts import PartPlan, file_sets, object_key, plan_parts
from services.publish.settings import DEFAULT_EXPORT_PARTNER, PublishSettings
from shared.db import acquire
from shared.dropzone import DropZone, DropZoneUnavailable
from shared.formats.inbound import DEFAULT_MAX_PART_BYTES, InboundFileName
from shared.logging import get_logger
from shared.retry import Backoff

log = get_logger(__name__)


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


async def _part_chunks(rows: SetRows, part: PartPlan, encoder: PartEncoder) -> AsyncGenerator[bytes, None]:
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
    pool: asyncpg.Pool, zone: DropZone, run: ExportRun, key: str, rows: SetRows, part: PartPlan, options: FileOptions
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
            q = set_query(fs, run, trait)
            stats = await conn.fetchrow(q.plan, *q.plan_args)
            assert stats is not None
            if stats["n"] == 0:
                continue
            base = InboundFileName(run.dpid, file_ts, fs.mode, gzip=options.gzip)
            parts = plan_parts(base, stats["n"], stats["variable"] + q.overhead, options.max_part_bytes)
            set_rows = SetRows(await conn.cursor(q.rows, *q.rows_args), q.fetch)
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
