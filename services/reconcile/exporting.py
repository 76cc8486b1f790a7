"""Export: a campaign list becomes ID batches for a shared audience (Campaign's "Update shared audience").

Per request: resolve the list's recipients to IDs of the data source set-wise (declared IDs through the
reconciliation key and its transform, so raw PII never leaves; visitor IDs through ``visitor_link``, all
of a recipient's ECIDs), diff them against ``exported_member`` (what the bridge shared before), and emit
``audience-export-batches``. Recipients without an ID are counted as ``excluded`` and listed in
``export_excluded``. Removals are only ever IDs the bridge itself exported (``mirror`` and ``full``).

Exactly once: a request is recorded in ``export_request``; each attempt gets its own run id, and the
diff is read inside one REPEATABLE READ snapshot, so a run's batches are consistent even if the list
changes meanwhile. A request already emitted is not emitted again when Kafka redelivers it.
``exported_member`` is updated by publish once the run's files are written, never here.

The run is written through :mod:`shared.runs.store` and reported through
:class:`~shared.runs.reporter.RunReporter`: ``started`` and ``progress`` once its batches are on their way
(publish then reports how it ends), or ``blocked``/``failed`` when reconcile itself ends it. Its IDs are cut
into batches by :class:`~shared.id_batches.RunBatches`, the same rule as ingest's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.reconcile.declared_keys import (
    RECONCILIATION_KEYS,
    declared_key_sql,
    exportable_key_sql,
    unexportable_key_sql,
)
from services.reconcile.metrics import NoReconcileMetrics, ReconcileMetrics
from shared.copy_text import CopyTextLines
from shared.errors import PermanentError, TransientError
from shared.id_batches import Cut, RunBatches
from shared.ids import KEY_TRANSFORMS
from shared.kafka import Delivery, OutgoingMessage, Producer, Rejected
from shared.kafka.window import WindowSender
from shared.logging import get_logger
from shared.messages import MAX_IDS_PER_BATCH, AudienceExportBatch, AudienceExportRequest
from shared.platform.models import PII
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter

log = get_logger(__name__)

AUDIENCE_NAMESPACE = uuid.UUID("8d7c1c8e-4b1f-4f55-9d5e-2f2a9e3c6b01")
RUN_NAMESPACE = uuid.UUID("c0b8a1d2-6e3f-4a7b-8c9d-0e1f2a3b4c5d")
SUPERSEDED = "superseded by a new attempt of its request"

# The ID expression per data source kind. Built once from fixed whitelists: no input reaches SQL text.
# DISTINCT without ORDER BY: Postgres de-duplicates with a hash, and batch order carries no meaning (the
# run's files are written from what publish staged, in batch order, so a run's files are fixed per run).
_CURRENT_IDS: dict[tuple[str, str | None, str], str] = {
    ("ecid", None, "none"): (
        "SELECT DISTINCT v.ecid AS id FROM list_member lm JOIN visitor_link v USING (recipient_id) "
        "WHERE lm.list_id = $1"
    ),
    **{
        ("declared", key, transform): (
            f"SELECT DISTINCT {declared_key_sql(key, transform)} AS id "  # noqa: S608
            "FROM list_member lm JOIN recipient r USING (recipient_id) "
            f"WHERE lm.list_id = $1 AND {exportable_key_sql(key, transform)}"
        )
        for key in RECONCILIATION_KEYS
        for transform in KEY_TRANSFORMS
    },
}
_EXCLUDED: dict[tuple[str, str | None, str], str] = {
    ("ecid", None, "none"): (
        "SELECT lm.recipient_id FROM list_member lm WHERE lm.list_id = $1 "
        "AND NOT EXISTS (SELECT 1 FROM visitor_link v WHERE v.recipient_id = lm.recipient_id)"
    ),
    **{
        ("declared", key, transform): (
            "SELECT lm.recipient_id FROM list_member lm JOIN recipient r USING (recipient_id) "  # noqa: S608
            f"WHERE lm.list_id = $1 AND {unexportable_key_sql(key, transform)}"
        )
        for key in RECONCILIATION_KEYS
        for transform in KEY_TRANSFORMS
    },
}


@dataclass(frozen=True, slots=True)
class DiffQuery:
    """One one-column query of a run's diff: its IDs are all adds or all removes."""

    sql: str
    is_add: bool
    by_audience: bool  # takes the audience id as $2 (the list id is always $1)


def diff_sql(current_ids: str, mode: str) -> tuple[DiffQuery, ...]:
    """What to add to the audience and (mirror/full) what the bridge must remove, read one after the
    other in one snapshot."""
    if mode == "full":
        adds = DiffQuery(f"SELECT c.id FROM ({current_ids}) c", is_add=True, by_audience=False)  # noqa: S608
    else:
        adds = DiffQuery(
            f"SELECT c.id FROM ({current_ids}) c "  # noqa: S608
            "WHERE NOT EXISTS (SELECT 1 FROM exported_member e WHERE e.audience_id = $2 AND e.id = c.id)",
            is_add=True,
            by_audience=True,
        )
    if mode == "append":
        return (adds,)
    removes = DiffQuery(
        "SELECT e.id FROM exported_member e WHERE e.audience_id = $2 "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM ({current_ids}) c WHERE c.id = e.id)",
        is_add=False,
        by_audience=True,
    )
    return (adds, removes)


def export_audience_id(data_source: str, audience_name: str) -> str:
    """A stable id for (data source, audience name), safe as a platform integration code."""
    return "ab-" + uuid.uuid5(AUDIENCE_NAMESPACE, f"{data_source}\n{audience_name}").hex[:20]


def export_run_id(request_id: uuid.UUID, attempt: int) -> uuid.UUID:
    """The run of an export request's ``attempt`` (from 1; 0: the id a refused or failed request is reported by)."""
    return uuid.uuid5(RUN_NAMESPACE, f"{request_id}\n{attempt}")


class ExportBlocked(PermanentError):
    """The data source's export controls forbid the export."""


@dataclass(frozen=True, slots=True)
class _Source:
    data_source_id: int
    name: str
    dpid: int
    id_type: str
    reconciliation_key: str | None
    key_transform: str
    export_controls: tuple[str, ...]

    @property
    def kind(self) -> tuple[str, str | None, str]:
        return (self.id_type, self.reconciliation_key, self.key_transform)


@dataclass(frozen=True, slots=True)
class _OpenedRun:
    run_id: uuid.UUID
    received: int
    excluded: int


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
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = batches_topic
        self._reporter = reporter
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)
        self._work_mem = f"{int(work_mem_mb)}MB"
        self._metrics: ReconcileMetrics = metrics or NoReconcileMetrics()

    async def handle(self, deliveries: Sequence[Delivery[AudienceExportRequest]]) -> list[Rejected]:
        rejected: list[Rejected] = []
        for delivery in deliveries:
            request = delivery.message
            # Refused or failed requests are reported under attempt 0's run id (attempts count from 1): most
            # never got a run of their own.
            refused = export_run_id(request.request_id, 0)
            try:
                await self.export(request)
            except ExportBlocked as exc:
                # Refused by governance: reported, not dead-lettered (the request was valid).
                await self._reporter.report(
                    RunOutcome(run_id=refused, direction="export", state="blocked", reason=exc.message)
                )
            except PermanentError as exc:
                rejected.append(Rejected(delivery, exc))
                await self._reporter.report(
                    RunOutcome(run_id=refused, direction="export", state="failed", reason=str(exc))
                )
        return rejected

    async def export(self, request: AudienceExportRequest) -> uuid.UUID | None:
        """Emit the request's run; returns its run id (None when it was emitted before)."""
        async with self._pool.acquire() as conn:
            # A redelivered request that was emitted already is done, whatever came after it: checking this
            # first keeps an old request from waiting on a newer run of its audience (which waits behind it).
            emitted = await conn.fetchval(
                "SELECT emitted_run FROM export_request WHERE request_id = $1", request.request_id
            )
            if emitted is not None:
                log.info("export_request_already_emitted", request_id=str(request.request_id))
                return None
            list_id, source, audience_id = await self._resolve(conn, request)
            run = await self._open_run(conn, request, list_id, source, audience_id)
            if run is None:
                log.info("export_request_already_emitted", request_id=str(request.request_id))
                return None
            # Committed with the run's export_excluded rows (a retried attempt is a new run, counted anew).
            self._metrics.export_excluded(run.excluded)
            opened = {"received": run.received, "excluded": run.excluded}
            await self._reporter.report(RunOutcome(run.run_id, "export", "started", audience_id, counts=opened))
            batches = await self._emit(conn, run, list_id, source, audience_id, request.mode)
            counts = {**opened, "added": batches.added, "removed": batches.removed}
            async with conn.transaction():
                await conn.execute(
                    "UPDATE export_request SET emitted_run = $2 WHERE request_id = $1", request.request_id, run.run_id
                )
                await store.set_counts(conn, run.run_id, {**counts, "batches": batches.seq})
            # Reconcile's part is done: publish reports how the run ends (and counts it).
            await self._reporter.report(RunOutcome(run.run_id, "export", "progress", audience_id, counts=counts))
            return run.run_id

    async def _resolve(self, conn: Any, request: AudienceExportRequest) -> tuple[int, _Source, str]:
        """The request's list, data source and audience id, once the export is known to be allowed now."""
        list_id = await self._list_id(conn, request.list_id)
        source = await self._source(conn, request.data_source)
        if PII in source.export_controls:
            raise ExportBlocked(
                f"data source {source.name!r} carries the PII export restriction: campaign recipients may not "
                "be shared into it",
                data_source=source.name,
            )
        if source.kind not in _CURRENT_IDS:
            raise PermanentError("data source has an unsupported reconciliation key", data_source=source.name)
        audience_id = export_audience_id(source.name, request.audience_name)
        # Runs of one audience are diffed one after the other: a diff against what publish has not yet
        # confirmed could miss a removal (an ID added by the pending run and gone from the list since).
        pending = await store.live_export_of(conn, audience_id, other_than_request=request.request_id)
        if pending is not None:
            raise TransientError(
                "an earlier export of this audience is not confirmed yet",
                audience_id=audience_id,
                pending_run=str(pending),
            )
        return list_id, source, audience_id

    async def _list_id(self, conn: Any, list_ref: str) -> int:
        row = await conn.fetchval(
            "SELECT list_id FROM list WHERE name = $1 OR ($1 ~ '^[0-9]{1,18}$' AND list_id = $1::bigint)", list_ref
        )
        if row is None:
            raise PermanentError("unknown list", list=list_ref)
        return int(row)

    async def _source(self, conn: Any, name: str) -> _Source:
        row = await conn.fetchrow(
            """SELECT data_source_id, name, dpid, id_type, reconciliation_key, key_transform, export_controls
                 FROM data_source WHERE name = $1""",
            name,
        )
        if row is None:
            raise PermanentError("unknown data source", data_source=name)
        values = dict(row)
        values["export_controls"] = tuple(values["export_controls"])
        return _Source(**values)

    async def _open_run(
        self, conn: Any, request: AudienceExportRequest, list_id: int, source: _Source, audience_id: str
    ) -> _OpenedRun | None:
        """Record the attempt and its run (with the recipients it leaves out); None: emitted before."""
        async with conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO export_request (request_id, audience_id, attempts, requested_by)
                   VALUES ($1, $2, 1, $3)
                   ON CONFLICT (request_id) DO UPDATE SET attempts = export_request.attempts + 1
                   RETURNING attempts, emitted_run""",
                request.request_id,
                audience_id,
                request.requested_by,
            )
            if row["emitted_run"] is not None:
                return None
            run_id = export_run_id(request.request_id, row["attempts"])
            # An earlier attempt that never finished emitting will never be published: close it.
            await store.fail_live_attempts(conn, request.request_id, SUPERSEDED)
            await conn.execute(
                """INSERT INTO shared_audience (audience_id, name, direction, data_source_id, list_id, export_mode)
                   VALUES ($1, $2, 'export', $3, $4, $5)
                   ON CONFLICT (audience_id) DO UPDATE SET list_id = EXCLUDED.list_id,
                       export_mode = EXCLUDED.export_mode, updated_at = now()""",
                audience_id,
                request.audience_name,
                source.data_source_id,
                list_id,
                request.mode,
            )
            received = int(await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", list_id))
            new_run = store.NewRun(
                run_id=run_id,
                direction="export",
                audience_id=audience_id,
                mode=request.mode,
                data_source_id=source.data_source_id,
                list_id=list_id,
                id_type=source.id_type,
                state="progress",
                request_id=request.request_id,
                dpid=source.dpid,
                counts={"received": received},
            )
            if not await store.open_run(conn, new_run):
                # Attempts are numbered by the request's row, so each has a run id of its own: never reached.
                raise PermanentError("an export run with this id exists already", run_id=str(run_id))
            excluded_status = await conn.execute(
                f"INSERT INTO export_excluded (run_id, recipient_id) SELECT $2::uuid, x.recipient_id "  # noqa: S608
                f"FROM ({_EXCLUDED[source.kind]}) x",
                list_id,
                run_id,
            )
            excluded = int(excluded_status.rsplit(" ", 1)[-1])
            await store.set_counts(conn, run_id, {"excluded": excluded})
        return _OpenedRun(run_id, received, excluded)

    async def _emit(
        self, conn: Any, run: _OpenedRun, list_id: int, source: _Source, audience_id: str, mode: str
    ) -> RunBatches:
        """Read the run's diff and send it as batches; returns the closed batches (their count and IDs taken)."""

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
            # One snapshot for the whole diff: the run's batches agree with each other. COPY rather than
            # a cursor: Postgres may plan it in parallel, and the IDs arrive as lines, split in bulk.
            # Meanwhile the previous window of batches is on its way to Kafka.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute("SELECT set_config('work_mem', $1, true)", self._work_mem)
                for query in diff_sql(_CURRENT_IDS[source.kind], mode):
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
