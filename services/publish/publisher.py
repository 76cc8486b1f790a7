"""An export run from its first batch to its outcome: consume → decide → write → emit.

Per batch (``Publisher.handle``):

1. the run must exist (reconcile records it before emitting); otherwise the batch is dead-lettered and a
   ``failed`` status says why;
2. on the run's first batch: ``started`` is reported, and the shared audience is made sure of on the
   platform (trait + segment, ids recorded in ``shared_audience``) if it is not yet;
3. the batch is staged exactly once (:mod:`services.publish.stage`);
4. once every batch is staged: the files are written (:mod:`services.publish.files`), then the run moves
   to ``uploaded`` and waits for the platform's receipts (:mod:`services.publish.receipt_poller` ends it
   ``succeeded``, ``partial`` or ``failed`` and applies what the platform applied to ``exported_member``);
   a first or full run's recorded set is built apart beside the files (:mod:`services.publish.recorded_set`).
   Without receipts (``EXPORT_AWAIT_RECEIPTS=false``) one transaction applies the run to
   ``exported_member``, marks it ``succeeded`` with its counts and drops its staged rows at once.

A run whose platform calls or drop-zone writes still fail after their retries is marked ``failed`` with
the reason, keeps its staged rows, and the batch returns normally so the partition moves on; it is
finished later by :func:`retry_run` (``audience-bridge retry RUN``) or superseded by the next export
request's run. Postgres or Kafka being unavailable is not a run failure: the batch is retried as a whole
and, every step being idempotent, goes on where it stopped.

Every change of the run's state is a :func:`shared.runs.store.move`, which the lifecycle table guards (a
run that already succeeded is never failed), and is announced by the :class:`RunReporter` only once the
transaction that made it has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Final

import asyncpg

from services.publish import recorded_set
from services.publish.apply_sql import apply_whole_run, drop_staging
from services.publish.audience import ensure_audience
from services.publish.export_run import PUBLISH_ENDS, BatchRefused, ExportRun, check_batch, load_run, run_counts
from services.publish.files import FileOptions, WrittenFiles, write_run_files
from services.publish.metrics import NoPublishMetrics, PublishMetrics
from services.publish.parts import file_timestamp
from services.publish.stage import allocate_file_ts, stage_batches
from shared.db import acquire
from shared.dropzone import DropZone, DropZoneUnavailable
from shared.errors import PermanentError
from shared.kafka import Delivery, Rejected
from shared.logging import get_logger, redact_text
from shared.messages import AudienceExportBatch
from shared.platform import PlatformClient, PlatformError
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.runs.states import IllegalTransition

log = get_logger(__name__)

STEP_AUDIENCE = "creating the shared audience on the platform"
STEP_FILES = "writing the inbound data files"
MAX_REASON_CHARS: Final = 1000


class RunNotRetryable(PermanentError):
    """``retry_run`` refuses: the run is unknown, superseded by a newer successful run, or incomplete."""


def failure_reason(step: str, exc: BaseException) -> str:
    """Why a run failed, fit for the run row and a status event: bounded, secrets masked."""
    detail = redact_text(str(exc)) or type(exc).__name__
    return f"{step}: {detail}"[:MAX_REASON_CHARS]


def _lock_key(run_id: uuid.UUID) -> int:
    return int.from_bytes(run_id.bytes[:8], "big", signed=True)


def _require_complete(run: ExportRun) -> None:
    if not run.complete:
        raise RunNotRetryable(
            "the run's batches are not all staged yet",
            run_id=str(run.run_id),
            staged=run.staged_batches,
            last_seq=run.last_seq,
        )


class Publisher:
    """Publishes export runs; one per service (or per CLI call), safe for one consumer task at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        zone: DropZone,
        platform: PlatformClient,
        status: RunReporter,
        *,
        options: FileOptions,
        metrics: PublishMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._zone = zone
        self._platform = platform
        self._status = status
        self._options = options
        self._metrics: PublishMetrics = metrics or NoPublishMetrics()

    # --- consume ---------------------------------------------------------------------------------------

    async def handle(self, deliveries: Sequence[Delivery[AudienceExportBatch]]) -> list[Rejected]:
        rejected: list[Rejected] = []
        # A poll's batches of one run are staged together (one transaction); runs keep their order.
        for _, group in itertools.groupby(deliveries, key=lambda d: d.message.run_id):
            group_deliveries = list(group)
            try:
                refused = await self._publish_group(group_deliveries)
            except PermanentError as error:
                refused = [(d, error) for d in group_deliveries]
            for delivery, exc in refused:
                rejected.append(Rejected(delivery, exc))
                # Said on the status topic only: the run row (if there is one) is not this batch's to end.
                batch = delivery.message
                reason = failure_reason("batch refused", exc)
                await self._report(RunOutcome(batch.run_id, "export", "failed", batch.audience_id, reason=reason))
        return rejected

    async def _publish_group(
        self, deliveries: Sequence[Delivery[AudienceExportBatch]]
    ) -> list[tuple[Delivery[AudienceExportBatch], PermanentError]]:
        """Publish one run's batches; returns those refused (each with why), the others went through."""
        run = await load_run(self._pool, deliveries[0].message.run_id)
        refused: list[tuple[Delivery[AudienceExportBatch], PermanentError]] = []
        accepted: list[AudienceExportBatch] = []
        for delivery in deliveries:
            try:
                self._check(run, delivery.message)
            except BatchRefused as exc:
                refused.append((delivery, exc))
            else:
                accepted.append(delivery.message)
        if accepted:
            await self.publish_batches(accepted)
        return refused

    @staticmethod
    def _check(run: ExportRun | None, batch: AudienceExportBatch) -> None:
        if run is None:
            raise BatchRefused(
                "no export run with this id (reconcile records the run before emitting its batches)",
                run_id=str(batch.run_id),
                audience_id=batch.audience_id,
            )
        check_batch(run, batch)

    async def publish_batches(self, batches: Sequence[AudienceExportBatch]) -> RunOutcome | None:
        """Stage batches of one run; finish the run when they complete it. Returns the run's outcome when
        it ended. Raises :class:`BatchRefused` when the run is unknown or a batch disagrees with it."""
        run = await load_run(self._pool, batches[0].run_id)
        for batch in batches:
            self._check(run, batch)
        assert run is not None
        if run.live and run.staged_batches == 0:
            await self._report(run.started())
        if run.live and (run.trait_id is None or run.segment_id is None):
            try:
                run = await ensure_audience(self._pool, self._platform, run)
            except PlatformError as exc:
                await self._fail(run, STEP_AUDIENCE, exc)
                run = await self._reload(run.run_id)
        staged = await stage_batches(self._pool, batches)
        log.info(
            "export_batches_staged",
            run_id=str(run.run_id),
            seqs=[b.seq for b in batches][:50],
            fresh=staged.fresh,
            staged=staged.staged_batches,
            last_seq=staged.last_seq,
        )
        if not staged.complete:
            return None
        if run.live:
            return await self.finish(run.run_id)
        if not staged.fresh and any(b.last for b in batches) and run.state in PUBLISH_ENDS:
            # Redelivered after publish ended the run (a crash before the offset commit may also have lost
            # the status event): say again how it ended, change nothing.
            outcome = run.outcome()
            await self._report(outcome)
            return outcome
        return None

    # --- write and apply -------------------------------------------------------------------------------

    async def finish(self, run_id: uuid.UUID, *, retrying: bool = False) -> RunOutcome:
        """Write the complete run's files and apply it. Serialised per run across processes (a consumer and
        ``audience-bridge retry`` may meet), and a no-op for a run that already succeeded."""
        async with self._run_lock(run_id):
            run = await self._reload(run_id)
            if run.state in ("succeeded", "uploaded") or not (run.live or (retrying and run.state == "failed")):
                return run.outcome()
            _require_complete(run)
            try:
                run = await ensure_audience(self._pool, self._platform, run)
            except PlatformError as exc:
                return await self._fail(run, STEP_AUDIENCE, exc)
            assert run.trait_id is not None
            file_ts = run.file_ts or await allocate_file_ts(self._pool, run, file_timestamp(run.started_at))
            # A first or full run's recorded set, built apart beside the files (they leave a core to Postgres;
            # built after them, it came after the receipts) and swapped in by the receipts (recorded_set.py).
            build = asyncio.create_task(self._build_recorded_set(run)) if self._options.await_receipts else None
            try:
                files = await write_run_files(
                    self._pool,
                    self._zone,
                    run,
                    trait=run.trait_id,
                    file_ts=file_ts,
                    options=self._options,
                    metrics=self._metrics,
                )
            except (DropZoneUnavailable, PermanentError) as exc:
                # PermanentError here: the zone refused a name, or a line the platform cannot take.
                await recorded_set.settle(build)  # a set built stays with the failed run's staging, for its retry
                return await self._fail(run, STEP_FILES, exc)
            except BaseException:
                await recorded_set.settle(build, cancel=True)  # the batch is retried: the set is built then, or found
                raise
            if self._options.await_receipts:
                assert build is not None
                try:
                    outcome = await self._mark_uploaded(run, files)
                    await self._report(outcome)
                    built = await build
                except BaseException:
                    await recorded_set.settle(build, cancel=True)  # never left running behind a retried batch
                    raise
                if built is None:  # not live when the files began (a failed run retried): built now if it may be
                    await self._build_recorded_set(run)
                return outcome
            outcome = await self._apply(run, files)
            if outcome.state == "succeeded":
                self._metrics.ids_sent("add", outcome.counts["added"])
                self._metrics.ids_sent("remove", outcome.counts["removed"])
            await self._report(outcome)
            return outcome

    async def _build_recorded_set(self, run: ExportRun) -> int | None:
        return await recorded_set.build(
            self._pool, run.run_id, run.audience_id, full=run.mode == "full", work_mem_mb=self._options.work_mem_mb
        )

    async def _apply(self, run: ExportRun, files: WrittenFiles) -> RunOutcome:
        """In one transaction: exported_member follows the run, the run succeeds, its staging goes."""
        async with acquire(self._pool) as conn, conn.transaction():
            locked = await store.lock(conn, run.run_id, "export")
            if locked["state"] == "succeeded":  # finished meanwhile (by a retry): its members stand as applied
                return (await self._reload(run.run_id, conn)).outcome()
            sizes = await conn.fetchrow(
                """SELECT coalesce(sum(adds_n), 0) AS adds, coalesce(sum(removes_n), 0) AS removes
                     FROM publish_stage_batch WHERE run_id = $1""",
                run.run_id,
            )
            assert sizes is not None
            full = run.mode == "full"
            await apply_whole_run(conn, run.run_id, run.audience_id, full=full, work_mem_mb=self._options.work_mem_mb)
            counts = run_counts(run.totals, run.counts, added=sizes["adds"], removed=sizes["removes"])
            moved = await store.move(conn, run.run_id, "succeeded", counts=counts)
            await drop_staging(conn, run.run_id, run.audience_id, run.started_at)
        log.info(
            "export_run_succeeded",
            run_id=str(run.run_id),
            audience_id=run.audience_id,
            files_written=len(files.written),
            files_kept=len(files.kept),
            **counts,
        )
        # The counts publish reports (the row may hold more, such as reconcile's batch totals).
        return dataclasses.replace(moved, counts=counts, files=tuple(files.keys))

    async def _mark_uploaded(self, run: ExportRun, files: WrittenFiles) -> RunOutcome:
        """The files are in the zone: the run waits for the platform's receipts, its IDs pending (staged)."""
        async with acquire(self._pool) as conn, conn.transaction():
            locked = await store.lock(conn, run.run_id, "export")
            if locked["state"] not in ("started", "progress", "failed"):  # ended or uploaded meanwhile
                return (await self._reload(run.run_id, conn)).outcome()
            sizes = await conn.fetchrow(
                """SELECT coalesce(sum(adds_n), 0) AS adds, coalesce(sum(removes_n), 0) AS removes
                     FROM publish_stage_batch WHERE run_id = $1""",
                run.run_id,
            )
            lines = await conn.fetchval(
                "SELECT coalesce(sum(lines), 0) FROM published_file WHERE run_id = $1", run.run_id
            )
            assert sizes is not None
            counts = run_counts(run.totals, run.counts, added=sizes["adds"], removed=sizes["removes"])
            moved = await store.move(conn, run.run_id, "uploaded", counts={**counts, "uploaded": int(lines)})
        log.info("export_run_uploaded", run_id=str(run.run_id), files=len(files.keys), lines=int(lines), **counts)
        return dataclasses.replace(moved, counts=counts, files=tuple(files.keys))

    async def _fail(self, run: ExportRun, step: str, exc: BaseException) -> RunOutcome:
        """End the run as ``failed`` with why, unless it succeeded meanwhile (a retry or another replica
        finished it): a succeeded run stays succeeded, and its outcome is returned unannounced."""
        reason = failure_reason(step, exc)
        try:
            async with acquire(self._pool) as conn, conn.transaction():
                await store.move(conn, run.run_id, "failed", reason=reason)
        except IllegalTransition:
            return (await self._reload(run.run_id)).outcome()
        log.warning(
            "export_run_failed",
            run_id=str(run.run_id),
            audience_id=run.audience_id,
            error=type(exc).__name__,
            reason=reason,
        )
        outcome = (await self._reload(run.run_id)).outcome()
        await self._report(outcome)
        return outcome

    # --- retry -----------------------------------------------------------------------------------------

    async def retry(self, run_id: uuid.UUID) -> RunOutcome:
        run = await load_run(self._pool, run_id)
        if run is None:
            raise RunNotRetryable("no export run with this id", run_id=str(run_id))
        if run.state == "succeeded":
            return run.outcome()
        newer = await self._pool.fetchval(
            """SELECT run_id FROM run WHERE direction = 'export' AND audience_id = $1 AND state = 'succeeded'
                  AND started_at > $2 ORDER BY started_at DESC LIMIT 1""",
            run.audience_id,
            run.started_at,
        )
        if newer is not None:
            raise RunNotRetryable(
                "a newer run of this audience succeeded since: request a new export instead",
                run_id=str(run_id),
                newer_run_id=str(newer),
            )
        _require_complete(run)
        if await self._pool.fetchval(
            "SELECT true FROM published_file WHERE run_id = $1 AND receipt_status IS NOT NULL LIMIT 1", run_id
        ):
            raise RunNotRetryable(
                "the platform processed (or the bridge withdrew) this run's files: request a new export, which "
                "sends again what the platform did not apply",
                run_id=str(run_id),
            )
        log.info("export_run_retrying", run_id=str(run_id), audience_id=run.audience_id, state=run.state)
        return await self.finish(run_id, retrying=True)

    # --- helpers ---------------------------------------------------------------------------------------

    async def _reload(self, run_id: uuid.UUID, conn: object | None = None) -> ExportRun:
        run = await load_run(conn if conn is not None else self._pool, run_id)
        if run is None:
            raise RunNotRetryable("the run disappeared", run_id=str(run_id))
        return run

    @contextlib.asynccontextmanager
    async def _run_lock(self, run_id: uuid.UUID) -> AsyncIterator[None]:
        # A session-level advisory lock on its own connection: released by unlock, or by Postgres when
        # the process dies, so a crashed publisher never leaves a run locked.
        key = _lock_key(run_id)
        async with acquire(self._pool) as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def _report(self, outcome: RunOutcome) -> None:
        """Announce where the run stands, once its move has committed. The reporter counts an ended run
        in ``ab_runs_total`` and, through the hook the service gives it, in ``ab_export_runs_total``
        (so the two agree); ``started`` ends nothing and is publish's own count."""
        await self._status.report(outcome)
        if outcome.state == "started":
            self._metrics.run_reported(outcome.state)


async def retry_run(
    pool: asyncpg.Pool,
    zone: DropZone,
    platform: PlatformClient,
    status: RunReporter,
    run_id: uuid.UUID,
    *,
    options: FileOptions | None = None,
    metrics: PublishMetrics | None = None,
) -> RunOutcome:
    """Finish a failed (or interrupted) export run from its staged batches: ``audience-bridge retry RUN``.

    Returns the outcome (``succeeded``, or ``failed`` again with the new reason; a run that already
    succeeded is returned as it is). Raises :class:`RunNotRetryable` for an unknown run, a run superseded
    by a newer successful run of its audience, or one whose batches are not all staged. Pass
    ``FileOptions.from_settings(load_settings(PublishSettings))`` so the files land where the service
    writes them.
    """
    publisher = Publisher(pool, zone, platform, status, options=options or FileOptions(), metrics=metrics)
    return await publisher.retry(run_id)
