"""The platform's outbound segment files become membership runs: watch, verify, emit, file away.

Per scan of the import drop zone:

1. files other writers are still writing (hidden and partial-upload names) are left alone
   (:mod:`services.ingest.arrivals`);
2. group names by batch root; a name that breaks the grammar is moved to ``rejected/`` with the reason
   (:mod:`services.ingest.outbound_batches`) once it has not changed for ``quiet_period_s``;
3. a batch is ready when its ``.info`` and every part it lists are present; one still incomplete after
   ``parts_timeout_s`` is rejected;
4. a batch whose import audiences all have a polling interval (``poll_every``) with no slot due waits in the
   zone, untouched, for the earliest next slot among them (:mod:`services.ingest.poll_slots`);
5. a batch that no import audience takes (its master DPID is no audience's data source, or its destination
   is not the one its audiences name: :mod:`services.ingest.routing`) is reported, recorded with the
   reason and filed in ``processed/`` unread;
6. every part is verified against the ``.info`` before anything is emitted (a gzip part is inflated there,
   once, into a spool the next step reads: :mod:`services.ingest.part_spool`);
7. the parts are read and the IDs emitted as ``audience-membership`` batches for the import audiences of
   the batch's data source (:mod:`services.ingest.file_runs`: ``full`` files → ``mode=full``, ``iter`` →
   ``delta``);
8. the batch is recorded as processed in Postgres (``processed_file``) and its files moved to ``processed/``.

Run ids and batch boundaries are derived from the batch's name and content, so a restart in the middle
re-emits exactly the same batches, which reconcile's ``applied_batch`` ledger recognises: nothing lost,
nothing applied twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg

from services.ingest.arrivals import QuietPeriod, split_arrivals
from services.ingest.audiences import AudienceDirectory
from services.ingest.batch_attempts import BatchAttempts
from services.ingest.file_runs import FileRunsContext, NoValidLine, emit_file_runs
from services.ingest.governance import GovernanceCheck
from services.ingest.outbound_batches import (
    BatchRejected,
    OutboundBatch,
    Parts,
    group_names,
    inflated,
    ready_parts,
    verify_parts,
)
from services.ingest.part_spool import BatchSpools, default_spool_dir, prepare_spool_dir
from services.ingest.poll_slots import ImportPolls, PollWindow, held
from services.ingest.routing import Unrouted, origin_of, unrouted
from services.ingest.run_ids import batch_run_id
from shared.db import acquire
from shared.dropzone import DropZone, ObjectInfo
from shared.failures import classify, give_up_reason, is_dependency_failure, redact
from shared.formats import BadFileName, FormatError
from shared.formats.outbound import DEFAULT_NAMES, OutboundFileName, OutboundNames
from shared.kafka import Producer
from shared.logging import get_logger
from shared.messages import MAX_IDS_PER_BATCH
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter

log = get_logger(__name__)

SCAN_LOCK_KEY = 0x41_42_53_43_4E  # "ABSCN": one scanner of the import zone at a time


class FileImporter:
    def __init__(
        self,
        *,
        zone: DropZone,
        pool: asyncpg.Pool,
        producer: Producer,
        membership_topic: str,
        directory: AudienceDirectory,
        governance: GovernanceCheck,
        status: RunReporter,
        batch_size: int = 5000,
        parts_timeout_s: float = 600.0,
        quiet_period_s: float = 0.0,
        names: OutboundNames = DEFAULT_NAMES,
        on_file: Callable[[str, str], None] | None = None,
        max_attempts: int = 3,
        max_part_bytes: int | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        """``max_attempts``: scans a batch may fail unexpectedly in before it is rejected (HANDLER_MAX_ATTEMPTS).
        ``spool_dir`` (IMPORT_SPOOL_DIR, default a private folder of the system temp dir): where gzip parts'
        content waits between check and parse; prepared (and a crash's leftovers removed) here, at start."""
        self._zone = zone
        self._names = names
        self._pool = pool
        self._status = status
        self._directory = directory
        self._quiet = QuietPeriod(quiet_period_s)
        self._stale_noted: set[str] = set()  # left-alone files already logged as lingering
        self._runs = FileRunsContext(
            producer=producer,
            topic=membership_topic,
            directory=directory,
            governance=governance,
            reporter=status,
            batch_size=min(batch_size, MAX_IDS_PER_BATCH),
        )
        self._parts_timeout_s = parts_timeout_s
        self._max_part_bytes = max_part_bytes  # IMPORT_MAX_PART_BYTES: a part's content, inflated
        self._spool_dir = prepare_spool_dir(spool_dir or default_spool_dir())
        self._attempts = BatchAttempts(max_attempts)
        self._polls = ImportPolls(pool)
        self._window = PollWindow()  # this scan's: which audiences' deliveries may be read
        self._on_file = on_file or (lambda _name, _outcome: None)

    async def scan(self) -> int:
        """Handle every ready batch once; returns how many batches were processed or rejected.

        Several ingest replicas may watch the same zone: a Postgres advisory lock lets one of them scan at a
        time (it is released with the session, so a crashed scanner never blocks the others).
        """
        async with acquire(self._pool) as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCAN_LOCK_KEY):
                return 0
            try:
                return await self._scan()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SCAN_LOCK_KEY)

    async def _scan(self) -> int:
        self._window = await self._polls.window()
        considered, alone = split_arrivals(await self._zone.list())
        self._note_lingering(alone)
        batches, bad = group_names(considered, self._names)
        settled = self._quiet.settled(obj for obj, _reason in bad)
        for obj, reason in bad:
            if obj.name not in settled:
                continue  # perhaps still being written under this name: rejected once it stops changing
            await self._zone.move(obj.name, "rejected", reason=f"file name breaks the outbound grammar: {reason}")
            self._on_file(obj.name, "rejected")
            log.warning("file_rejected", file=obj.name, reason=reason)
        done = 0
        for root in sorted(batches):
            try:
                if await self._handle_batch(batches[root]):
                    done += 1
                self._attempts.forget(root)
            except Exception as exc:
                if is_dependency_failure(exc):
                    raise  # the zone or a dependency is down: the whole scan waits and tries again
                # One batch's surprise (a part that vanished while it was read, ...) must not hold up the
                # batches after it. The batch is tried again at the next scan (its runs and batches derive
                # from its files, and reconcile applies a batch once whatever is emitted twice), and given up
                # after HANDLER_MAX_ATTEMPTS.
                if await self._failed(batches[root], exc):
                    done += 1
        # Only a scan that got this far polled its due slots: one cut short polls them at the next scan.
        await self._polls.record(self._window)
        return done

    async def _failed(self, batch: OutboundBatch, exc: Exception) -> bool:
        """Note an unexpected failure of ``batch``; True when that gave the batch up (it is rejected)."""
        failures = self._attempts.failed(batch.root)
        log.error(
            "batch_scan_failed",
            batch=batch.root,
            attempt=failures,
            error=type(exc).__name__,
            detail=redact(str(exc))[:500],
            exc_info=exc,
        )
        if not self._attempts.exhausted(failures):
            return False
        self._attempts.forget(batch.root)
        await self._reject(batch, give_up_reason(classify(exc), exc, failures))
        return True

    def _note_lingering(self, alone: list[ObjectInfo]) -> None:
        """Say once about each left-alone file not renamed within the parts timeout (an upload that was
        abandoned, or a hidden file someone keeps there): it stays untouched, but someone should look."""
        now = time.time()
        for obj in alone:
            if obj.name not in self._stale_noted and now - obj.mtime.timestamp() > self._parts_timeout_s:
                self._stale_noted.add(obj.name)
                log.warning("file_left_alone", file=obj.name, reason="hidden or partial-upload name, not renamed")
        self._stale_noted.intersection_update(obj.name for obj in alone)

    async def _handle_batch(self, batch: OutboundBatch) -> bool:
        ledger = await self._pool.fetchrow("SELECT state, reason FROM processed_file WHERE batch_root = $1", batch.root)
        # A batch filed unread because no audience took it may be dropped again once one does: handled anew.
        filed_unread = ledger is not None and ledger["state"] == "processed" and ledger["reason"] is not None
        if ledger is not None and ledger["state"] in ("processed", "rejected") and not filed_unread:
            # Left over by a crash between the ledger commit and the move: file them where they belong.
            state = ledger["state"]
            for name in batch.files():
                await self._zone.move(
                    name,
                    "processed" if state == "processed" else "rejected",
                    reason=None if state == "processed" else "batch was rejected earlier",
                )
            return False
        if await self._held(batch):
            return False
        # The batch's gzip parts are inflated once, by the check, into spools the parse reads: freed however
        # the batch ends (processed, rejected, failed, cancelled).
        async with BatchSpools(self._spool_dir) as spools:
            return await self._import(batch, spools)

    async def _import(self, batch: OutboundBatch, spools: BatchSpools) -> bool:
        try:
            ready = await ready_parts(self._zone, batch, parts_timeout_s=self._parts_timeout_s, names=self._names)
            if ready is None:
                return False
            info, parts = ready
            if parts:
                # Before reading anything: a batch no audience takes is filed unread.
                skipped = await self._unrouted(parts[0][1])
                if skipped is not None:
                    await self._file_unrouted(batch, skipped)
                    return True
            await verify_parts(self._zone, info, parts, max_part_bytes=self._max_part_bytes, spools=spools)
        except (BatchRejected, FormatError) as exc:
            await self._reject(batch, str(exc))
            return True
        await self._pool.execute(
            """INSERT INTO processed_file (batch_root, state) VALUES ($1, 'processing')
               ON CONFLICT (batch_root) DO UPDATE SET state = 'processing', reason = NULL, started_at = now()""",
            batch.root,
        )
        try:
            run_ids = await self._emit(batch, parts, spools)
        except (NoValidLine, FormatError) as exc:
            await self._reject(batch, str(exc))
            return True
        await self._pool.execute(
            """UPDATE processed_file SET state = 'processed', run_ids = $2, finished_at = now()
                WHERE batch_root = $1""",
            batch.root,
            run_ids,
        )
        for name in batch.files():
            await self._zone.move(name, "processed")
            self._on_file(name, "processed")
        log.info("batch_processed", batch=batch.root, runs=len(run_ids))
        return True

    async def _held(self, batch: OutboundBatch) -> bool:
        """Whether the batch waits for its audiences' next polling slot (decided from a part's name, before
        anything is read). A batch being retried after a failure is not held: its retries stay at each scan."""
        if not self._window.intervals or not batch.parts or self._attempts.pending(batch.root):
            return False
        try:
            name = self._names.parse(min(batch.parts))
        except BadFileName:
            return False  # ready_parts says what is wrong with it
        return held(self._window, await self._directory.import_audiences(), origin_of(name))

    async def _unrouted(self, name: OutboundFileName) -> Unrouted | None:
        origin = origin_of(name)
        skipped = unrouted(await self._directory.import_audiences(), origin)
        if skipped is not None and await self._directory.refresh_soon():
            skipped = unrouted(await self._directory.import_audiences(), origin)
        return skipped

    async def _file_unrouted(self, batch: OutboundBatch, skipped: Unrouted) -> None:
        """Reported and filed in ``processed/``: the delivery is sound, only nobody here takes it. Never fed
        to audiences of other data sources (their IDs are not of this kind)."""
        await self._pool.execute(
            """INSERT INTO processed_file (batch_root, state, reason, finished_at) VALUES ($1, 'processed', $2, now())
               ON CONFLICT (batch_root) DO UPDATE SET state = 'processed', reason = $2, run_ids = '{}',
                   finished_at = now()""",
            batch.root,
            skipped.reason,
        )
        for name in batch.files():
            await self._zone.move(name, "processed")
            self._on_file(name, skipped.outcome)
        await self._status.report(RunOutcome(batch_run_id(batch.root), "import", "failed", reason=skipped.reason))
        log.warning("batch_not_imported", batch=batch.root, outcome=skipped.outcome, reason=skipped.reason)

    async def _emit(self, batch: OutboundBatch, parts: Parts, spools: BatchSpools | None = None) -> list[uuid.UUID]:
        contents = [(parsed, self._content(obj, parsed, spools)) for obj, parsed in parts]
        return await emit_file_runs(self._runs, batch.root, contents)

    def _content(self, obj: ObjectInfo, parsed: OutboundFileName, spools: BatchSpools | None) -> AsyncIterator[bytes]:
        """A part's content: a gzip part's from the spool its check filled (inflated once)."""
        if not parsed.gzip:
            return self._zone.read(obj.name)
        if spools is not None and spools.has(parsed.name):
            return spools.content(parsed.name)
        # Not spooled (emitted without the check's spools): inflated here, bounded alike.
        return inflated(self._zone.read(obj.name), max_total_bytes=self._max_part_bytes)

    async def _reject(self, batch: OutboundBatch, reason: str) -> None:
        for name in batch.files():
            await self._zone.move(name, "rejected", reason=reason)
            self._on_file(name, "rejected")
        await self._pool.execute(
            """INSERT INTO processed_file (batch_root, state, reason, finished_at) VALUES ($1, 'rejected', $2, now())
               ON CONFLICT (batch_root) DO UPDATE SET state = 'rejected', reason = $2, finished_at = now()""",
            batch.root,
            reason,
        )
        await self._status.report(RunOutcome(batch_run_id(batch.root), "import", "failed", reason=reason))
        log.warning("batch_rejected", batch=batch.root, reason=reason)
