"""The platform's outbound segment files become membership runs: watch, verify, emit, file away.

Per scan of the import drop zone:

1. files other writers are still writing (hidden and partial-upload names) are left alone
   (:mod:`services.ingest.arrivals`);
2. group names by batch root; a name that breaks the grammar is moved to ``rejected/`` with the reason
   (:mod:`services.ingest.outbound_batches`) once it has not changed for ``quiet_period_s``;
3. a batch is ready when its ``.info`` and every part it lists are present; one still incomplete after
   ``parts_timeout_s`` is rejected;
4. a batch that no import audience takes (its master DPID is no audience's data source, or its destination
   is not the one its audiences name: :mod:`services.ingest.routing`) is reported, recorded with the
   reason and filed in ``processed/`` unread;
5. every part is verified against the ``.info`` before anything is emitted;
6. the parts are read and the IDs emitted as ``audience-membership`` batches for the import audiences of
   the batch's data source (:mod:`services.ingest.file_runs`: ``full`` files → ``mode=full``, ``iter`` →
   ``delta``);
7. the batch is recorded as processed in Postgres (``processed_file``) and its files moved to ``processed/``.

Run ids and batch boundaries are derived from the batch's name and content, so a restart in the middle
re-emits exactly the same batches, which reconcile's ``applied_batch`` ledger recognises: nothing lost,
nothing applied twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import asyncpg

from services.ingest.arrivals import QuietPeriod, split_arrivals
from services.ingest.audiences import AudienceDirectory
from services.ingest.file_runs import FileRunsContext, NoValidLine, emit_file_runs
from services.ingest.governance import GovernanceCheck
from services.ingest.outbound_batches import (
    BatchRejected,
    OutboundBatch,
    Parts,
    group_names,
    ready_parts,
    verify_parts,
)
from services.ingest.routing import Unrouted, origin_of, unrouted
from services.ingest.run_ids import batch_run_id
from shared.dropzone import DropZone, ObjectInfo
from shared.formats import FormatError
from shared.formats.outbound import DEFAULT_NAMES, OutboundFileName, OutboundNames
from shared.kafka import Producer
from shared.logging import get_logger
from shared.messages import MAX_IDS_PER_BATCH
from shared.retry import is_transient
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
    ) -> None:
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
        self._on_file = on_file or (lambda _name, _outcome: None)

    async def scan(self) -> int:
        """Handle every ready batch once; returns how many batches were processed or rejected.

        Several ingest replicas may watch the same zone: a Postgres advisory lock lets one of them scan at a
        time (it is released with the session, so a crashed scanner never blocks the others).
        """
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCAN_LOCK_KEY):
                return 0
            try:
                return await self._scan()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", SCAN_LOCK_KEY)

    async def _scan(self) -> int:
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
            except Exception as exc:
                if is_transient(exc):
                    raise  # the zone or a dependency is down: the whole scan waits and tries again
                # One batch's surprise (a part that vanished while it was read, ...) must not hold up the
                # batches after it. The batch is tried again at the next scan: its runs and batches derive
                # from its files, and reconcile applies a batch once whatever is emitted twice.
                log.error("batch_scan_failed", batch=root, error=type(exc).__name__, detail=str(exc)[:500])
        return done

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
            await verify_parts(self._zone, info, parts)
        except (BatchRejected, FormatError) as exc:
            await self._reject(batch, str(exc))
            return True
        await self._pool.execute(
            """INSERT INTO processed_file (batch_root, state) VALUES ($1, 'processing')
               ON CONFLICT (batch_root) DO UPDATE SET state = 'processing', reason = NULL, started_at = now()""",
            batch.root,
        )
        try:
            run_ids = await self._emit(batch, parts)
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

    async def _emit(self, batch: OutboundBatch, parts: Parts) -> list[uuid.UUID]:
        return await emit_file_runs(
            self._runs, batch.root, [(parsed, self._zone.read(obj.name)) for obj, parsed in parts]
        )

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
