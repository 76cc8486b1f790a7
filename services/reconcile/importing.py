"""Import: membership batches become list membership, set-wise and exactly once.

Per batch (consume → decide → write → emit), in one Postgres transaction: open the run if it is new, record
``(run_id, seq)`` in ``applied_batch`` (a duplicate is a no-op), keep the batch's invalid IDs, then

* ``delta``: apply the batch to the list at once (:mod:`services.reconcile.import_delta`);
* ``full``: stage the batch's IDs; when every batch of the run is in (the ``last`` one says how many there
  are), match the whole snapshot and apply it as the list, or hold it back as ``blocked``
  (:mod:`services.reconcile.import_snapshot`).

The run's counts and state are written through :mod:`shared.runs.store` in the same transaction; its status
is reported once that transaction has committed. IDs that match nobody are kept
(:mod:`services.reconcile.unmatched`), to be re-matched later. A held-back snapshot is released on an
operator's say-so (:mod:`services.reconcile.release`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from services.reconcile.import_delta import apply_delta
from services.reconcile.import_governance import PolicyRefused, governed_target
from services.reconcile.import_snapshot import DEFAULT_WORK_MEM_MB, end_snapshot, stage_ids
from services.reconcile.import_snapshot import ImportGuards as ImportGuards  # the Importer's configuration
from services.reconcile.import_target import Connection, ImportTarget
from services.reconcile.metrics import NoReconcileMetrics, ReconcileMetrics
from services.reconcile.release import release_run as release_run  # where it was, for callers of old
from services.reconcile.unmatched import forget, keep_invalid, storable
from shared.db import acquire
from shared.errors import PermanentError
from shared.ids import invalid_ids
from shared.kafka import Delivery, Rejected
from shared.logging import get_logger
from shared.messages import AudienceMembership
from shared.runs import store
from shared.runs.outcome import RunOutcome, match_rate
from shared.runs.reporter import RunReporter

log = get_logger(__name__)

# The batch claimed in the ledger (``fresh``: not applied before; a duplicate is a no-op), with its audience's
# target and what governance judges it by (:func:`services.reconcile.import_governance.governed_target`). A
# refused or unknown audience rolls the claim back with the rest.
_CLAIM_AND_TARGET = """
WITH claim AS (INSERT INTO applied_batch (run_id, seq) VALUES ($2, $3) ON CONFLICT DO NOTHING RETURNING seq)
SELECT sa.audience_id, sa.list_id, ds.data_source_id, ds.id_type, ds.reconciliation_key, ds.key_transform,
       ds.name AS data_source_name, ds.export_controls, g.refusal, EXISTS (SELECT 1 FROM claim) AS fresh
  FROM shared_audience sa JOIN data_source ds USING (data_source_id)
  LEFT JOIN segment_governance g ON g.platform_segment_id = sa.platform_segment_id
 WHERE sa.audience_id = $1 AND sa.direction = 'import'"""


@dataclass(frozen=True, slots=True)
class _Applied:
    """What one batch's transaction did, to measure and report once it has committed."""

    counts: dict[str, int] | None  # the batch's counts; None: it was applied before
    outcome: RunOutcome | None  # the run's state to report; None: nothing new to say
    ended_run: bool = False  # this batch ended the run


class Importer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        reporter: RunReporter,
        guards: ImportGuards,
        metrics: ReconcileMetrics | None = None,
        *,
        work_mem_mb: int = DEFAULT_WORK_MEM_MB,
        concurrency: int = 4,
    ) -> None:
        self._pool = pool
        self._reporter = reporter
        self._guards = guards
        self._metrics: ReconcileMetrics = metrics or NoReconcileMetrics()
        self._work_mem_mb = work_mem_mb
        self._slots = asyncio.Semaphore(max(1, concurrency))

    async def handle(self, deliveries: Sequence[Delivery[AudienceMembership]]) -> list[Rejected]:
        """Apply a poll's batches: each audience's in order, different audiences side by side (their lists
        differ, and a run's end, matching a whole snapshot, can take a while: another audience's run must
        not wait for it). The first unexpected error cancels the others; the poll is then retried, and
        what was committed meanwhile is skipped by ``applied_batch``."""
        by_audience: dict[str, list[Delivery[AudienceMembership]]] = {}
        for delivery in deliveries:
            by_audience.setdefault(delivery.message.audience_id, []).append(delivery)

        async def one(group: list[Delivery[AudienceMembership]]) -> list[Rejected]:
            # Shared by every call (partitions are handled side by side too): a bound on connections in use.
            async with self._slots:
                return await self._handle_in_order(group)

        if len(by_audience) == 1:
            return await one(list(deliveries))

        try:
            async with asyncio.TaskGroup() as tasks:
                running = [tasks.create_task(one(group)) for group in by_audience.values()]
        except BaseExceptionGroup as failed:
            # The consumer retries or dead-letters by the error's type: hand it the first one as it was.
            raise failed.exceptions[0] from None
        return [rejection for task in running for rejection in task.result()]

    async def _handle_in_order(self, deliveries: Sequence[Delivery[AudienceMembership]]) -> list[Rejected]:
        rejected: list[Rejected] = []
        for delivery in deliveries:
            batch = delivery.message
            try:
                outcome = await self.apply(batch)
            except PermanentError as exc:
                # Nothing of the batch was written (its transaction rolled back): the run fails here, as reported.
                rejected.append(Rejected(delivery, exc))
                await self._reporter.report(
                    RunOutcome(
                        run_id=batch.run_id,
                        direction="import",
                        # Refused by governance: held like ingest holds it, not a failure of the run's own.
                        state="blocked" if isinstance(exc, PolicyRefused) else "failed",
                        audience_id=batch.audience_id,
                        reason=str(exc),
                    )
                )
                continue
            if outcome is not None:
                await self._reporter.report(outcome)
        return rejected

    async def apply(self, batch: AudienceMembership) -> RunOutcome | None:
        """Apply one batch; returns the run's state to report (None: nothing new to say)."""
        applied = await self._apply_in_transaction(batch)
        # Measured only now that the transaction committed: a retried batch is not counted twice.
        if applied.counts is not None:
            self._metrics.import_batch(batch.id_type, applied.counts)
        outcome = applied.outcome
        if applied.ended_run and outcome is not None and batch.mode == "full" and outcome.state == "succeeded":
            # A full run's batches change nothing; its snapshot changes the list when the run ends.
            self._metrics.members_changed(outcome.count("added"), outcome.count("removed"))
        return outcome

    async def _apply_in_transaction(self, batch: AudienceMembership) -> _Applied:
        """The batch applied and its run's counts recorded, in one transaction. The batch that ends a full
        run also counts the snapshot's matched and unmatched IDs (known only once it is matched)."""
        async with acquire(self._pool) as conn, conn.transaction():
            # One statement: a streaming run is small, and each round trip to Postgres is much of its cost.
            row = await conn.fetchrow(_CLAIM_AND_TARGET, batch.audience_id, batch.run_id, batch.seq)
            # Governance twice: a direct write cannot bypass it.
            target = governed_target(row, batch.audience_id)
            if target.id_type != batch.id_type:
                raise PermanentError(
                    "batch id type differs from the audience's data source",
                    audience_id=batch.audience_id,
                    batch_id_type=batch.id_type,
                    data_source_id_type=target.id_type,
                )
            if not (row is not None and row["fresh"]):
                log.info("batch_already_applied", run_id=str(batch.run_id), seq=batch.seq)
                # A redelivered last batch re-reports where its run stands (its first delivery's report may
                # have been lost with the process); other batches have nothing new to say.
                return _Applied(None, await store.load(conn, batch.run_id) if batch.last else None)
            await store.open_run(
                conn,
                store.NewRun(
                    run_id=batch.run_id,
                    direction="import",
                    audience_id=batch.audience_id,
                    mode=batch.mode,
                    data_source_id=target.data_source_id,
                    list_id=target.list_id,
                    id_type=target.id_type,
                ),
            )
            counts = await self._apply_ids(conn, batch, target)
            tally = await store.record_batch(conn, batch.run_id, counts, seq=batch.seq, last=batch.last)
            if tally.ended or not tally.complete:
                return _Applied(counts, None)
            outcome, matching = await self._finish(conn, batch, target, tally.counts)
            return _Applied({**counts, **matching}, outcome, ended_run=True)

    async def _apply_ids(self, conn: Connection, batch: AudienceMembership, target: ImportTarget) -> dict[str, int]:
        """Decide what the batch's IDs are (invalid ones are kept aside at once), then apply or stage the rest."""
        found = invalid_ids(batch.id_type, batch.adds) + invalid_ids(batch.id_type, batch.removes)
        counts = {"received": len(batch.adds) + len(batch.removes), "invalid": len(found)}
        invalid = set(found)
        invalid_adds = [storable(i) for i in batch.adds if i in invalid]
        if invalid_adds:
            await keep_invalid(conn, target.audience_id, target.id_type, batch.run_id, invalid_adds)
        # IDs that left the segment are no longer wanted, matched or not; a delta's valid ones are forgotten by
        # the statement that applies it (:func:`apply_delta`).
        gone = batch.removes if batch.mode == "full" else [i for i in batch.removes if i in invalid]
        if gone:
            await forget(conn, target.audience_id, target.id_type, [storable(i) for i in gone])
        adds = [i for i in batch.adds if i not in invalid] if invalid else batch.adds
        if batch.mode == "full":
            if adds:
                await stage_ids(conn, batch.run_id, batch.seq, adds)
            return counts
        removes = [i for i in batch.removes if i not in invalid] if invalid else batch.removes
        return {**counts, **await apply_delta(conn, target, batch.run_id, adds, removes)}

    async def _finish(
        self, conn: Connection, batch: AudienceMembership, target: ImportTarget, counts: dict[str, int]
    ) -> tuple[RunOutcome, dict[str, int]]:
        """End the run (``counts``: its counts so far); returns its outcome and, for a full run, the snapshot's
        matched/unmatched counts."""
        if batch.mode != "full":
            # Its counts are final: the move writes their match rate itself.
            rate = match_rate("import", target.id_type, counts)
            return await store.move(conn, batch.run_id, "succeeded", expected_rate=rate), {}
        end = await end_snapshot(conn, batch.run_id, target, self._guards, work_mem_mb=self._work_mem_mb)
        matching = {"matched": end.matched, "unmatched": end.unmatched}
        if end.held is not None:
            return await store.move(conn, batch.run_id, "blocked", reason=end.held, counts=end.counts()), matching
        return await store.move(conn, batch.run_id, "succeeded", counts=end.counts()), matching
