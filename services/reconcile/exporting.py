"""Export: a campaign list becomes ID batches for a shared audience (Campaign's "Update shared audience").

Per request: resolve the list's recipients to IDs of the data source set-wise (declared IDs through the
reconciliation key and its transform, so raw PII never leaves; visitor IDs through ``visitor_link``, all
of a recipient's ECIDs), diff them against ``exported_member`` (what the bridge shared before), and emit
``audience-export-batches`` (the queries: :mod:`services.reconcile.export_diff`). Recipients without an ID
are counted as ``excluded`` and listed in ``export_excluded``. Removals are only ever IDs the bridge itself
exported (``mirror`` and ``full``).

Before anything is emitted, a request may be

* refused: its data source forbids the export (``blocked``), the catalog does not declare it for this list,
  mode and requester (``failed``: :mod:`services.reconcile.export_authorisation`), or its audience belongs
  to another list (``failed``: :mod:`services.reconcile.export_binding`);
* put to wait: an earlier run of its audience is under way (:mod:`services.reconcile.export_waiting`,
  which hands it back once that run ended, or failed it after ``EXPORT_RUN_TIMEOUT_S``);
* held ``blocked``: it would remove most of a large audience (:mod:`services.reconcile.export_guard`),
  until an operator releases it (:mod:`services.reconcile.export_release`).

Requests of different audiences are handled side by side; each audience's in order.

Exactly once: a request is recorded in ``export_request``; each attempt gets its own run id, and the
diff is read inside one REPEATABLE READ snapshot, so a run's batches are consistent even if the list
changes meanwhile. A request already emitted is not emitted again when Kafka redelivers it.
``exported_member`` is updated by publish, never here. Runs are written through :mod:`shared.runs.store`
and reported through :class:`~shared.runs.reporter.RunReporter`; their IDs are cut into batches by
:class:`~shared.id_batches.RunBatches`, the same rule as ingest's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.reconcile import export_authorisation as authorisation
from services.reconcile import export_run_rows as rows
from services.reconcile import export_waiting as waiting
from services.reconcile.export_binding import binding_of, refusal
from services.reconcile.export_diff import (
    CURRENT_IDS,
    Source,
    diff_sql,
    export_audience_id,
    export_run_id,
    list_id_of,
    load_source,
)
from services.reconcile.export_guard import ExportGuards, RemovalPlan, guarded, held_reason, removal_plan
from services.reconcile.export_locks import lock_audience, request_turn
from services.reconcile.metrics import NoReconcileMetrics, ReconcileMetrics
from shared.copy_text import CopyTextLines
from shared.db import acquire
from shared.errors import PermanentError
from shared.id_batches import Cut, RunBatches
from shared.kafka import Delivery, OutgoingMessage, Producer, Rejected
from shared.kafka.window import WindowSender
from shared.logging import get_logger
from shared.messages import MAX_IDS_PER_BATCH, AudienceExportBatch, AudienceExportRequest
from shared.platform.models import PII
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.runs.states import RunState

__all__ = ["ExportBlocked", "Exporter", "OpenedRun", "export_audience_id", "export_run_id"]

log = get_logger(__name__)

SUPERSEDED = "superseded by a new attempt of its request"


class ExportBlocked(PermanentError):
    """The data source's export controls forbid the export."""


@dataclass(frozen=True, slots=True)
class OpenedRun:
    run_id: uuid.UUID
    received: int
    excluded: int


@dataclass(frozen=True, slots=True)
class _Held:
    plan: RemovalPlan
    reason: str


Work = tuple[AudienceExportRequest, Delivery[AudienceExportRequest] | None]


class Exporter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: Producer,
        *,
        batches_topic: str,
        reporter: RunReporter,
        batch_size: int,
        work_mem_mb: int = 256,
        metrics: ReconcileMetrics | None = None,
        guards: ExportGuards | None = None,
        concurrency: int = 2,
        allow_undeclared: bool = False,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = batches_topic
        self._reporter = reporter
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)
        self._work_mem = f"{int(work_mem_mb)}MB"
        self._metrics: ReconcileMetrics = metrics or NoReconcileMetrics()
        self._guards = guards or ExportGuards()
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._allow_undeclared = allow_undeclared

    async def handle(self, deliveries: Sequence[Delivery[AudienceExportRequest]]) -> list[Rejected]:
        """A poll's requests: each audience's in order, different audiences side by side (a large export
        must not hold up a small one). The first unexpected error cancels the others; the poll is then
        retried, and what was emitted meanwhile is recognised by ``export_request``."""
        groups: dict[str, list[Work]] = {}
        for delivery in deliveries:
            request = delivery.message
            groups.setdefault(export_audience_id(request.data_source, request.audience_name), []).append(
                (request, delivery)
            )
        return await self._side_by_side(list(groups.values()))

    async def report(self, outcome: RunOutcome) -> None:
        """Announce a run's outcome reached outside the exporter's own flow (a release that failed)."""
        await self._reporter.report(outcome)

    async def resume(self, requests: Sequence[AudienceExportRequest]) -> None:
        """Requests that waited for their audience (one per audience), handed back by the export queue; one
        another worker is handling right now is left to it."""
        await self._side_by_side([[(request, None)] for request in requests])

    async def _side_by_side(self, groups: list[list[Work]]) -> list[Rejected]:
        async def one(group: list[Work]) -> list[Rejected]:
            # Shared by every caller (partitions and the queue): a bound on connections in use.
            async with self._slots:
                return [r for request, delivery in group if (r := await self._attempt(request, delivery))]

        if len(groups) == 1:
            return await one(groups[0])
        try:
            async with asyncio.TaskGroup() as tasks:
                running = [tasks.create_task(one(group)) for group in groups]
        except BaseExceptionGroup as failed:
            # The consumer retries or dead-letters by the error's type: hand it the first one as it was.
            raise failed.exceptions[0] from None
        return [rejection for task in running for rejection in task.result()]

    async def _attempt(
        self, request: AudienceExportRequest, delivery: Delivery[AudienceExportRequest] | None
    ) -> Rejected | None:
        # Refused or failed requests are reported under attempt 0's run id (attempts count from 1): most
        # never got a run of their own.
        refused = export_run_id(request.request_id, 0)
        try:
            # Handed back by the queue (no delivery): never wait behind a worker emitting the same request.
            await self.export(request, wait_turn=delivery is not None)
        except PermanentError as exc:
            # A request that waited must not hold its audience's queue once it is refused.
            async with acquire(self._pool) as conn:
                await waiting.stop_waiting(conn, request.request_id)
            blocked = isinstance(exc, ExportBlocked)
            reason = exc.message if blocked else str(exc)
            state: RunState = "blocked" if blocked else "failed"
            await self._reporter.report(RunOutcome(run_id=refused, direction="export", state=state, reason=reason))
            # Refused by governance: reported, not dead-lettered (the request was valid).
            if delivery is not None and not blocked:
                return Rejected(delivery, exc)
        return None

    async def export(self, request: AudienceExportRequest, *, wait_turn: bool = True) -> uuid.UUID | None:
        """Emit the request's run, hold it or refuse it; returns its run id. None: it was emitted before, it
        waits for an earlier run of its audience (the export queue hands it back), or (``wait_turn`` false)
        another worker is handling it."""
        async with acquire(self._pool) as conn, request_turn(conn, request.request_id, wait=wait_turn) as has_turn:
            if not has_turn:
                return None
            # A redelivered request that was emitted already is done, whatever came after it: checking this
            # first keeps an old request from waiting on a newer run of its audience (which waits behind it).
            emitted = await conn.fetchval(
                "SELECT emitted_run FROM export_request WHERE request_id = $1", request.request_id
            )
            if emitted is not None:
                log.info("export_request_already_emitted", request_id=str(request.request_id))
                return None
            list_id, source, audience_id = await self._resolve(conn, request)
            turn = await self._open_run(conn, request, list_id, source, audience_id)
            if isinstance(turn, RunOutcome):
                await self._reporter.report(turn)
                return turn.run_id
            if turn is None:
                return None
            # Committed with the run's export_excluded rows (a retried attempt is a new run, counted anew).
            self._metrics.export_excluded(turn.excluded)
            opened = {"received": turn.received, "excluded": turn.excluded}
            await self._reporter.report(RunOutcome(turn.run_id, "export", "started", audience_id, counts=opened))
            await self.emit_run(conn, turn, request.request_id, list_id, source, audience_id, request.mode)
            return turn.run_id

    async def _resolve(self, conn: Any, request: AudienceExportRequest) -> tuple[int, Source, str]:
        """The request's list, data source and audience id, once the export is known to be allowed."""
        list_id = await list_id_of(conn, request.list_id)
        source = await load_source(conn, request.data_source)
        if PII in source.export_controls:
            raise ExportBlocked(
                f"data source {source.name!r} carries the PII export restriction: campaign recipients may not "
                "be shared into it",
                data_source=source.name,
            )
        if source.kind not in CURRENT_IDS:
            raise PermanentError("data source has an unsupported reconciliation key", data_source=source.name)
        return list_id, source, export_audience_id(source.name, request.audience_name)

    async def _open_run(
        self, conn: Any, request: AudienceExportRequest, list_id: int, source: Source, audience_id: str
    ) -> OpenedRun | RunOutcome | None:
        """Record the attempt and its run (with the recipients it leaves out); a refused request's ``failed``
        run; or None: emitted before, or it waits for its audience."""
        async with conn.transaction():
            # Runs of one audience are diffed one after the other, across partitions and replicas.
            await lock_audience(conn, audience_id)
            row = await rows.record_request(conn, request, audience_id)
            if row["emitted_run"] is not None:
                return None
            declared = await authorisation.declaration_of(conn, source.data_source_id, request.audience_name)
            why = authorisation.refusal(declared, request, list_id, allow_undeclared=self._allow_undeclared)
            why = why or refusal(await binding_of(conn, audience_id), list_id, request.list_id)
            if why is not None:
                return await self._refuse(conn, request, list_id, source, audience_id, why)
            # A diff against what the platform has not applied yet could miss a removal: wait, off the consumer.
            ahead = await waiting.ahead_of(conn, audience_id, request.request_id, row["waiting_since"])
            if ahead is not None:
                await waiting.start_waiting(conn, request.request_id)
                log.info(
                    "export_request_waiting", request_id=str(request.request_id), audience_id=audience_id, behind=ahead
                )
                return None
            return await self._start_attempt(conn, request, list_id, source, audience_id)

    async def _start_attempt(
        self, conn: Any, request: AudienceExportRequest, list_id: int, source: Source, audience_id: str
    ) -> OpenedRun:
        """The request's next attempt: its run, its audience, the recipients it leaves out (in the caller's
        transaction)."""
        run_id = await rows.next_attempt(conn, request.request_id)
        # An earlier attempt that never finished emitting will never be published: close it.
        await store.fail_live_attempts(conn, request.request_id, SUPERSEDED)
        await rows.ensure_audience(conn, request, list_id, source, audience_id)
        received = int(await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", list_id))
        await self._new_run(conn, rows.new_run(run_id, request, list_id, source, audience_id, {"received": received}))
        excluded = await rows.record_left_out(conn, run_id, list_id, source)
        return OpenedRun(run_id, received, excluded)

    @staticmethod
    async def _new_run(conn: Any, new_run: store.NewRun) -> None:
        if not await store.open_run(conn, new_run):
            # Attempts are numbered by the request's row, so each has a run id of its own: never reached.
            raise PermanentError("an export run with this id exists already", run_id=str(new_run.run_id))

    async def _refuse(
        self, conn: Any, request: AudienceExportRequest, list_id: int, source: Source, audience_id: str, why: str
    ) -> RunOutcome:
        """A ``failed`` run saying why, recorded as the request's outcome (a redelivery changes nothing)."""
        run_id = await rows.next_attempt(conn, request.request_id)
        await self._new_run(conn, rows.new_run(run_id, request, list_id, source, audience_id, {}, state="failed"))
        outcome = await store.move(conn, run_id, "failed", reason=why)
        await rows.record_emitted(conn, request.request_id, run_id)
        log.warning("export_request_refused", request_id=str(request.request_id), audience_id=audience_id, reason=why)
        return outcome

    async def emit_run(
        self,
        conn: Any,
        run: OpenedRun,
        request_id: uuid.UUID,
        list_id: int,
        source: Source,
        audience_id: str,
        mode: str,
        *,
        guard: bool = True,
    ) -> RunOutcome:
        """Diff and emit the run (or hold it back), record it as the request's, and report where it stands."""
        emitted = await self._emit(conn, run, list_id, source, audience_id, mode, guard=guard)
        async with conn.transaction():
            await rows.record_emitted(conn, request_id, run.run_id)
            if isinstance(emitted, _Held):
                outcome = await store.move(
                    conn, run.run_id, "blocked", reason=emitted.reason, counts=emitted.plan.counts()
                )
            else:
                counts = {"received": run.received, "excluded": run.excluded}
                counts |= {"added": emitted.added, "removed": emitted.removed}
                await store.set_counts(conn, run.run_id, {**counts, "batches": emitted.seq})
                # Reconcile's part is done: publish reports how the run ends (and counts it).
                outcome = RunOutcome(run.run_id, "export", "progress", audience_id, counts=counts)
        await self._reporter.report(outcome)
        return outcome

    async def _emit(
        self, conn: Any, run: OpenedRun, list_id: int, source: Source, audience_id: str, mode: str, *, guard: bool
    ) -> RunBatches | _Held:
        """Read the run's diff and send it as batches; returns the closed batches (their count and IDs taken),
        or why the run is held back, before anything was sent."""

        def message(cut: Cut) -> OutgoingMessage:
            batch = AudienceExportBatch(
                run_id=run.run_id,
                seq=cut.seq,
                last=cut.last,
                audience_id=audience_id,
                data_source=source.name,
                dpid=source.dpid,
                mode=mode,
                adds=cut.adds,
                removes=cut.removes,
                totals=cut.totals,
            )
            return OutgoingMessage.of(self._topic, batch)

        sender = WindowSender(self._producer)
        batches = RunBatches(self._batch_size, message, sender)
        try:
            # One snapshot for the whole diff: the run's batches agree with each other and with the guard's
            # numbers. COPY rather than a cursor: Postgres may plan it in parallel, and the IDs arrive as
            # lines, split in bulk. Meanwhile the previous window of batches is on its way to Kafka.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute("SELECT set_config('work_mem', $1, true)", self._work_mem)
                current = CURRENT_IDS[source.kind]
                if guard and guarded(mode):
                    plan = await removal_plan(conn, current, list_id, audience_id, min_size=self._guards.min_size)
                    if (reason := held_reason(plan, self._guards)) is not None:
                        log.warning("export_run_held", run_id=str(run.run_id), audience_id=audience_id, **plan.counts())
                        return _Held(plan, reason)
                for query in diff_sql(current, mode):
                    lines = CopyTextLines()

                    async def sink(
                        chunk: bytes, lines: CopyTextLines = lines, removes: bool = not query.is_add
                    ) -> None:
                        await batches.extend(lines.feed(chunk), removes=removes)

                    args = (list_id, audience_id) if query.by_audience else (list_id,)
                    await conn.copy_from_query(query.sql, *args, output=sink)
                    await batches.extend(lines.finish(), removes=not query.is_add)
            totals = {"received": run.received, "excluded": run.excluded}
            await batches.close({**totals, "adds": batches.added, "removes": batches.removed})
            await sender.flush()
        finally:
            await sender.close()
        return batches
