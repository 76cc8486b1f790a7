"""Uploaded export runs follow the platform: their receipts are polled, and each run ends by them.

Every poll (``EXPORT_RECEIPT_POLL_S``, doubling up to ``EXPORT_RECEIPT_POLL_MAX_S`` while nothing new comes,
back to the start when a receipt does) reads the files of runs in ``uploaded`` that have no verdict yet,
asks the platform once per data source for the receipts of jobs since the oldest of them (one call, not one
per file), and records each file's verdict (:mod:`services.publish.receipts`) on its ``published_file`` row.
A file with no receipt after ``EXPORT_RECEIPT_TIMEOUT_S`` is withdrawn from the drop zone (the platform
must not apply it after the run ended) and judged ``timed_out``. A run whose files all have their verdict
ends in one transaction (:func:`apply_verdicts`): ``exported_member`` takes what the platform applied,
``export_rejected_id`` what it did not, the staged rows go, and the run moves to ``succeeded``, ``partial``
or ``failed``. Until then the run's IDs are pending: staged, neither shared nor sent again (the run being
live, the audience's next run waits for it).

Several replicas may poll: verdicts are idempotent and a run is ended under its advisory lock, once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final

import asyncpg
import orjson

from services.publish import recorded_set
from services.publish.apply_sql import DEFAULT_APPLY_WORK_MEM_MB, apply_whole_run, drop_staging, set_work_mem
from services.publish.export_run import load_run
from services.publish.metrics import NoPublishMetrics, PublishMetrics
from services.publish.receipt_pacing import PollPace, next_poll_delay
from services.publish.receipts import (
    CLOCK_SLACK_MS,
    FileVerdict,
    LineRange,
    ReceiptOptions,
    UploadedFile,
    is_overdue,
    judge,
    match_receipt,
    run_verdict,
    timed_out,
    unapplied_ranges,
)
from shared.db import acquire
from shared.dropzone import DropZone, DropZoneUnavailable
from shared.errors import TransientError
from shared.logging import get_logger
from shared.platform import PlatformClient, PlatformError
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.runs.states import IllegalTransition

log = get_logger(__name__)


_AWAITING: Final = """
SELECT r.run_id, ds.dpid, pf.name, pf.file_set, pf.first_line, pf.lines,
       (extract(epoch FROM pf.written_at) * 1000)::bigint AS written_ms
  FROM run r
  JOIN shared_audience sa ON sa.audience_id = r.audience_id
  JOIN data_source ds ON ds.data_source_id = coalesce(r.data_source_id, sa.data_source_id)
  JOIN published_file pf ON pf.run_id = r.run_id
 WHERE r.direction = 'export' AND r.state = 'uploaded' AND pf.receipt_status IS NULL
"""
_RUNS_DONE: Final = """
SELECT r.run_id FROM run r
 WHERE r.direction = 'export' AND r.state = 'uploaded'
   AND NOT EXISTS (SELECT 1 FROM published_file pf WHERE pf.run_id = r.run_id AND pf.receipt_status IS NULL)
"""

# A run's set rows with their 0-based position in their file set, in the order files.py writes them: a
# .sync set is the staged batches in order, each one's adds then its removes (a full run's .sync set holds
# removes only); an .overwrite set is the run's distinct adds sorted byte-wise.
_SET_ROWS: Final = """
WITH b AS (
    SELECT seq, adds, removes, adds_n, removes_n,
           coalesce(sum(CASE WHEN $2 THEN removes_n ELSE adds_n + removes_n END)
                    OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS off
      FROM publish_stage_batch WHERE run_id = $1),
set_rows AS (
    SELECT 'sync'::text AS file_set, b.off + a.n - 1 AS ord, a.id COLLATE "C" AS id, true AS is_add
      FROM b, string_to_table(b.adds, E'\\n') WITH ORDINALITY AS a(id, n) WHERE b.adds_n > 0 AND NOT $2
    UNION ALL
    SELECT 'sync', b.off + CASE WHEN $2 THEN 0 ELSE b.adds_n END + r.n - 1, r.id COLLATE "C", false
      FROM b, string_to_table(b.removes, E'\\n') WITH ORDINALITY AS r(id, n) WHERE b.removes_n > 0
    UNION ALL
    SELECT 'overwrite', row_number() OVER (ORDER BY d.id) - 1, d.id, true
      FROM (SELECT DISTINCT a.id COLLATE "C" AS id FROM b, string_to_table(b.adds, E'\\n') AS a(id)
             WHERE b.adds_n > 0 AND $2) d),
gaps AS (SELECT * FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])
                        AS u(file_set, lo, hi, file, reason)),
judged AS (
    SELECT s.id, s.is_add, g.file, g.reason
      FROM set_rows s LEFT JOIN gaps g ON g.file_set = s.file_set AND s.ord >= g.lo AND s.ord < g.hi)
"""
# The IDs now shared: adds applied, or unconfirmed (kept, so that a later removal is still sent).
_INSERT_SHARED: Final = (
    _SET_ROWS
    + """
INSERT INTO exported_member (audience_id, id, run_id, exported_at)
SELECT DISTINCT ON (j.id) $8::text, j.id, $1::uuid, now() FROM judged j
 WHERE (j.is_add AND (j.reason IS NULL OR j.reason = 'unconfirmed'))
    OR (NOT j.is_add AND j.reason IS NOT NULL AND $2)
 ORDER BY j.id
ON CONFLICT (audience_id, id) DO UPDATE SET run_id = EXCLUDED.run_id, exported_at = EXCLUDED.exported_at
"""
)
# Removes the platform applied leave exported_member (a full run replaced it whole beforehand).
_DELETE_REMOVED: Final = (
    _SET_ROWS
    + """
DELETE FROM exported_member em USING judged j
 WHERE em.audience_id = $8 AND em.id = j.id AND NOT j.is_add AND j.reason IS NULL
"""
)
_INSERT_REJECTED: Final = (
    _SET_ROWS
    + """
INSERT INTO export_rejected_id (audience_id, id, is_add, run_id, file, reason)
SELECT $8::text, j.id, j.is_add, $1::uuid, j.file, j.reason FROM judged j WHERE j.reason IS NOT NULL
ON CONFLICT (audience_id, id, is_add) DO UPDATE
    SET run_id = EXCLUDED.run_id, file = EXCLUDED.file, reason = EXCLUDED.reason, recorded_at = now()
"""
)


def _range_args(ranges: Sequence[LineRange]) -> tuple[list[str], list[int], list[int], list[str], list[str]]:
    return (
        [r.file_set for r in ranges],
        [r.lo for r in ranges],
        [r.hi for r in ranges],
        [r.file for r in ranges],
        [r.reason for r in ranges],
    )


async def apply_verdicts(
    conn: Any,
    run_id: uuid.UUID,
    audience_id: str,
    full: bool,
    ranges: Sequence[LineRange],
    *,
    work_mem_mb: int = DEFAULT_APPLY_WORK_MEM_MB,
) -> None:
    """exported_member follows what the platform applied (inside the caller's transaction)."""
    if not ranges:
        # Everything applied (the usual case): the set prepared while the platform processed the files swapped
        # in whole, or else the plain statements, no line numbers needed.
        if not await recorded_set.swap_in(conn, run_id, audience_id, full=full):
            await apply_whole_run(conn, run_id, audience_id, full=full, work_mem_mb=work_mem_mb)
        await conn.execute("DELETE FROM export_rejected_id WHERE audience_id = $1", audience_id)
        return
    args = (run_id, full, *_range_args(ranges), audience_id)
    await set_work_mem(conn, work_mem_mb)
    if full:
        # A full run is the complete audience: what the bridge shared before is replaced by what applied
        # (and by the removes not applied: those users still hold the trait).
        await conn.execute("DELETE FROM exported_member WHERE audience_id = $1", audience_id)
    else:
        await conn.execute(_DELETE_REMOVED, *args)
    await conn.execute(_INSERT_SHARED, *args)
    # An audience's refused IDs are those of its latest ended run: earlier ones were sent again since.
    await conn.execute("DELETE FROM export_rejected_id WHERE audience_id = $1", audience_id)
    await conn.execute(_INSERT_REJECTED, *args)


class ReceiptPoller:
    """Polls the receipts of uploaded runs and ends them; one per publish service."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        platform: PlatformClient,
        zone: DropZone,
        status: RunReporter,
        options: ReceiptOptions,
        *,
        metrics: PublishMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._platform = platform
        self._zone = zone
        self._status = status
        self._options = options
        self._metrics: PublishMetrics = metrics or NoPublishMetrics()
        self.awaiting = 0  # files awaiting their receipt at the last poll
        self.newest_upload_ms: int | None = None  # when the latest of them was written (epoch ms)

    async def run(self) -> None:
        """Poll until cancelled: every ``poll_s`` while receipts come, new files await theirs, none does, or
        the latest upload is less than ``poll_fast_s`` old; backing off (doubling) to ``poll_max_s`` while
        files wait longer and nothing comes, or the platform or Postgres cannot be reached
        (:mod:`services.publish.receipt_pacing`)."""
        options = self._options
        pace = PollPace(options.poll_s, options.poll_max_s, options.poll_fast_s)
        delay = options.poll_s
        awaited = 0
        while True:
            try:
                progressed = await self.poll_once()
            except (TransientError, PlatformError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("export_receipts_poll_failed", error=str(exc)[:300], retry_in_s=round(delay, 2))
                progressed = 0
            except Exception:
                # A bug, not an outage: said loudly, and polled again (the loop ending would stop publish).
                log.exception("export_receipts_poll_crashed", retry_in_s=round(delay, 2))
                progressed = 0
            newest = self.newest_upload_ms
            delay = next_poll_delay(
                delay,
                pace,
                progressed=bool(progressed),
                awaiting=self.awaiting,
                awaited_before=awaited,
                newest_upload_age_s=None if newest is None else max(0.0, time.time() - newest / 1000),
            )
            self._metrics.receipt_poll_delay(delay)
            awaited = self.awaiting
            await asyncio.sleep(delay)

    async def poll_once(self, now_ms: int | None = None) -> int:
        """One poll: verdicts recorded and runs ended by it (how many of both)."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        rows = await self._pool.fetch(_AWAITING)
        self.awaiting = len(rows)
        self.newest_upload_ms = max((r["written_ms"] for r in rows), default=None)
        by_source: dict[int, list[tuple[uuid.UUID, UploadedFile]]] = defaultdict(list)
        for r in rows:
            f = UploadedFile(r["name"], r["file_set"] or "sync", r["first_line"] or 0, r["lines"], r["written_ms"])
            by_source[r["dpid"]].append((r["run_id"], f))  # the platform's data source id is the DPID
        judged = 0
        for data_source_id, files in by_source.items():
            judged += await self._judge_source(data_source_id, files, now)
        ended = 0
        for row in await self._pool.fetch(_RUNS_DONE):
            if await self.end_run(row["run_id"]) is not None:
                ended += 1
        return judged + ended

    async def _judge_source(self, data_source_id: int, files: list[tuple[uuid.UUID, UploadedFile]], now: int) -> int:
        since = min(f.written_at_ms for _, f in files) - CLOCK_SLACK_MS
        try:
            receipts = await self._platform.inbound_history_since(data_source_id, since)
        except PlatformError as exc:
            log.warning("export_receipts_unavailable", data_source_id=data_source_id, error=str(exc)[:300])
            receipts = []
        judged = 0
        for run_id, f in files:
            receipt = match_receipt(f, receipts)
            if receipt is not None:
                verdict = judge(f, receipt)
            elif is_overdue(f, now, self._options.timeout_s):
                if not await self._withdraw(f):
                    continue
                verdict = timed_out(f, self._options.timeout_s)
                self._metrics.receipt_timed_out()
            else:
                continue
            await self._record(run_id, verdict)
            judged += 1
        return judged

    async def _withdraw(self, f: UploadedFile) -> bool:
        """Take an unprocessed file back, so the platform cannot apply it once its run has ended."""
        try:
            await self._zone.delete(f.key, missing_ok=True)
        except DropZoneUnavailable as exc:
            log.warning("export_file_withdraw_failed", file=f.key, error=str(exc)[:300])
            return False
        log.warning("export_file_withdrawn", file=f.key, reason="no receipt in time")
        return True

    async def _record(self, run_id: uuid.UUID, v: FileVerdict) -> None:
        lines = [[n, why] for n, why in v.rejected_lines] if v.rejected_lines is not None else None
        await self._pool.execute(
            """UPDATE published_file SET receipt_status = $3, lines_applied = $4, lines_rejected = $5,
                      rejected_by = $6::jsonb, receipt_reason = $7, receipt_at = now(),
                      rejected_lines = $8::jsonb
                WHERE run_id = $1 AND name = $2 AND receipt_status IS NULL""",
            run_id,
            v.key,
            v.verdict,
            v.lines_applied,
            v.lines_rejected,
            orjson.dumps(dict(v.rejected_by)).decode(),
            v.reason,
            orjson.dumps(lines).decode() if lines is not None else None,
        )
        for reason, n in v.rejected_by.items():
            self._metrics.lines_rejected(reason, n)
        log.info(
            "export_file_receipt",
            run_id=str(run_id),
            file=v.key,
            verdict=v.verdict,
            applied=v.lines_applied,
            rejected=v.lines_rejected,
            reason=v.reason,
        )

    async def end_run(self, run_id: uuid.UUID) -> RunOutcome | None:
        """End an uploaded run whose files all have their verdict; None if it is not (or no longer) one."""
        async with acquire(self._pool) as conn, conn.transaction():
            locked = await store.lock(conn, run_id, "export")
            if locked["state"] != "uploaded":
                return None
            rows = await conn.fetch("SELECT * FROM published_file WHERE run_id = $1", run_id)
            if any(r["receipt_status"] is None for r in rows):
                return None
            files = {
                r["name"]: UploadedFile(r["name"], r["file_set"] or "sync", r["first_line"] or 0, r["lines"], 0)
                for r in rows
            }
            verdicts = [_stored_verdict(r) for r in rows]
            result = run_verdict(verdicts)
            run = await load_run(conn, run_id)
            assert run is not None
            ranges = unapplied_ranges(files, verdicts)
            full = run.mode == "full"
            await apply_verdicts(conn, run_id, run.audience_id, full, ranges, work_mem_mb=self._options.work_mem_mb)
            reason = result.reason if result.state != "succeeded" else None
            try:
                moved = await store.move(conn, run_id, result.state, reason=reason, counts=result.counts)
            except IllegalTransition:
                return None
            await drop_staging(conn, run_id, run.audience_id, run.started_at)
        log.info("export_run_ended_by_receipts", run_id=str(run_id), state=result.state, **result.counts)
        outcome = (await load_run(self._pool, run_id) or run).outcome(files=sorted(files))
        if result.state == "succeeded" or result.state == "partial":
            self._metrics.ids_sent("add", run.counts.get("added", 0))
            self._metrics.ids_sent("remove", run.counts.get("removed", 0))
        await self._status.report(outcome if outcome.state == moved.state else moved)
        return outcome


def _stored_verdict(row: Any) -> FileVerdict:
    raw = row["rejected_lines"]
    lines = orjson.loads(raw) if raw is not None else None
    return FileVerdict(
        row["name"],
        row["receipt_status"],
        row["lines_applied"] or 0,
        row["lines_rejected"] or 0,
        {str(k): int(v) for k, v in orjson.loads(row["rejected_by"] or "{}").items()},
        tuple((int(n), str(why)) for n, why in lines) if lines is not None else None,
        row["receipt_reason"],
    )
