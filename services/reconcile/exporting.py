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
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.reconcile.keys import (
    KEY_TRANSFORMS,
    RECONCILIATION_KEYS,
    declared_key_sql,
    exportable_key_sql,
    unexportable_key_sql,
)
from services.reconcile.metrics import NoReconcileMetrics, ReconcileMetrics
from shared.copy_text import CopyTextLines
from shared.errors import PermanentError, TransientError
from shared.kafka import Delivery, OutgoingMessage, Producer, Rejected
from shared.logging import get_logger
from shared.messages import MAX_IDS_PER_BATCH, AudienceExportBatch, AudienceExportRequest
from shared.status import StatusReporter

log = get_logger(__name__)

AUDIENCE_NAMESPACE = uuid.UUID("8d7c1c8e-4b1f-4f55-9d5e-2f2a9e3c6b01")
RUN_NAMESPACE = uuid.UUID("c0b8a1d2-6e3f-4a7b-8c9d-0e1f2a3b4c5d")
SEND_WINDOW = 8
PII = "PII"

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


def run_id_for(request_id: uuid.UUID, attempt: int) -> uuid.UUID:
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


class Exporter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: Producer,
        *,
        batches_topic: str,
        status: StatusReporter,
        batch_size: int,
        work_mem_mb: int = 256,
        metrics: ReconcileMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = batches_topic
        self._status = status
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)
        self._work_mem = f"{int(work_mem_mb)}MB"
        self._metrics: ReconcileMetrics = metrics or NoReconcileMetrics()

    async def handle(self, deliveries: Sequence[Delivery[AudienceExportRequest]]) -> list[Rejected]:
        rejected: list[Rejected] = []
        for delivery in deliveries:
            request = delivery.message
            try:
                run_id = await self.export(request)
                if run_id is not None:
                    # Reconcile's part is done: publish reports how the run ends (ab_export_runs_total).
                    self._metrics.run_finished("export", "progress", run_id)
            except ExportBlocked as exc:
                # Refused by governance: reported, not dead-lettered (the request was valid).
                self._metrics.run_finished("export", "blocked", request.request_id)
                await self._status.report(
                    run_id_for(request.request_id, 0), direction="export", state="blocked", reason=exc.message
                )
            except PermanentError as exc:
                rejected.append(Rejected(delivery, exc))
                self._metrics.run_finished("export", "failed", request.request_id)
                await self._status.report(
                    run_id_for(request.request_id, 0), direction="export", state="failed", reason=str(exc)
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
            pending = await conn.fetchval(
                """SELECT run_id FROM run WHERE direction = 'export' AND audience_id = $1
                      AND state IN ('started', 'progress') AND request_id IS DISTINCT FROM $2 LIMIT 1""",
                audience_id,
                request.request_id,
            )
            if pending is not None:
                raise TransientError(
                    "an earlier export of this audience is not confirmed yet",
                    audience_id=audience_id,
                    pending_run=str(pending),
                )
            run = await self._open_run(conn, request, list_id, source, audience_id)
            if run is None:
                log.info("export_request_already_emitted", request_id=str(request.request_id))
                return None
            run_id, received, excluded = run
            # Committed with the run's export_excluded rows (a retried attempt is a new run, counted anew).
            self._metrics.export_excluded(excluded)
            await self._status.report(
                run_id,
                direction="export",
                state="started",
                audience_id=audience_id,
                counts={"received": received, "excluded": excluded},
            )
            adds, removes, batches = await self._emit(
                conn, run_id, list_id, source, audience_id, request.mode, received, excluded
            )
            counts = {"received": received, "excluded": excluded, "added": adds, "removed": removes}
            async with conn.transaction():
                await conn.execute(
                    "UPDATE export_request SET emitted_run = $2 WHERE request_id = $1", request.request_id, run_id
                )
                await conn.execute(
                    "UPDATE run SET counts = counts || $2::jsonb, updated_at = now() WHERE run_id = $1",
                    run_id,
                    orjson.dumps({**counts, "batches": batches}).decode(),
                )
            await self._status.report(
                run_id, direction="export", state="progress", audience_id=audience_id, counts=counts
            )
            return run_id

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
    ) -> tuple[uuid.UUID, int, int] | None:
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
            run_id = run_id_for(request.request_id, row["attempts"])
            # An earlier attempt that never finished emitting will never be published: close it.
            await conn.execute(
                """UPDATE run SET state = 'failed', reason = 'superseded by a new attempt of its request',
                          finished_at = now(), updated_at = now()
                    WHERE request_id = $1 AND state IN ('started', 'progress')""",
                request.request_id,
            )
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
            received = await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", list_id)
            await conn.execute(
                "INSERT INTO run (run_id, direction, audience_id, mode, state, data_source_id, list_id, id_type, "
                "request_id, dpid, counts) VALUES ($1, 'export', $2, $3, 'progress', $4, $5, $6, $7, $8, $9::jsonb)",
                run_id,
                audience_id,
                request.mode,
                source.data_source_id,
                list_id,
                source.id_type,
                request.request_id,
                source.dpid,
                orjson.dumps({"received": received}).decode(),
            )
            excluded_status = await conn.execute(
                f"INSERT INTO export_excluded (run_id, recipient_id) SELECT $2::uuid, x.recipient_id "  # noqa: S608
                f"FROM ({_EXCLUDED[source.kind]}) x",
                list_id,
                run_id,
            )
            excluded = int(excluded_status.rsplit(" ", 1)[-1])
            await conn.execute(
                "UPDATE run SET counts = counts || jsonb_build_object('excluded', $2::bigint) WHERE run_id = $1",
                run_id,
                excluded,
            )
        return run_id, int(received), excluded

    async def _emit(
        self,
        conn: Any,
        run_id: uuid.UUID,
        list_id: int,
        source: _Source,
        audience_id: str,
        mode: str,
        received: int,
        excluded: int,
    ) -> tuple[int, int, int]:
        queries = diff_sql(_CURRENT_IDS[source.kind], mode)
        seq = total_adds = total_removes = 0
        sender = _WindowSender(self._producer)

        async def emit(adds: list[str], removes: list[str], last: bool) -> None:
            nonlocal seq
            totals = None
            if last:
                totals = {
                    "received": received,
                    "excluded": excluded,
                    "adds": total_adds,
                    "removes": total_removes,
                    "batches": seq + 1,
                }
            message = AudienceExportBatch(
                run_id=run_id,
                seq=seq,
                last=last,
                audience_id=audience_id,
                data_source=source.name,
                dpid=source.dpid,
                mode=mode,
                adds=adds,
                removes=removes,
                totals=totals,
            )
            await sender.add(OutgoingMessage.of(self._topic, message))
            seq += 1

        # IDs wait here until a batch is full; a full batch leaves only once more IDs follow it, so the
        # run's last batch is known as such when it is sent (and carries the totals).
        adds: list[str] = []
        removes: list[str] = []

        async def take(ids: list[str], is_add: bool) -> None:
            nonlocal adds, removes, total_adds, total_removes
            if is_add:
                adds += ids
                total_adds += len(ids)
            else:
                removes += ids
                total_removes += len(ids)
            while len(adds) + len(removes) > self._batch_size:
                n_adds = min(len(adds), self._batch_size)
                n_removes = self._batch_size - n_adds
                batch_adds, adds = adds[:n_adds], adds[n_adds:]
                batch_removes, removes = removes[:n_removes], removes[n_removes:]
                await emit(batch_adds, batch_removes, last=False)

        try:
            # One snapshot for the whole diff: the run's batches agree with each other. COPY rather than
            # a cursor: Postgres may plan it in parallel, and the IDs arrive as lines, split in bulk.
            # Meanwhile the previous window of batches is on its way to Kafka.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute("SELECT set_config('work_mem', $1, true)", self._work_mem)
                for query in queries:
                    lines = CopyTextLines()

                    async def sink(chunk: bytes, lines: CopyTextLines = lines, is_add: bool = query.is_add) -> None:
                        await take(lines.feed(chunk), is_add)

                    args = (list_id, audience_id) if query.by_audience else (list_id,)
                    await conn.copy_from_query(query.sql, *args, output=sink)
                    await take(lines.finish(), query.is_add)
            await emit(adds, removes, last=True)
            await sender.flush()
        finally:
            await sender.close()
        return total_adds, total_removes, seq


class _WindowSender:
    """Sends messages in windows of ``SEND_WINDOW``, one window in flight while the next one fills."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._window: list[OutgoingMessage] = []
        self._in_flight: asyncio.Task[None] | None = None

    async def add(self, message: OutgoingMessage) -> None:
        self._window.append(message)
        if len(self._window) >= SEND_WINDOW:
            await self._launch()

    async def flush(self) -> None:
        await self._launch()
        await self._wait()

    async def _launch(self) -> None:
        await self._wait()  # raises the previous window's error: nothing goes out after a failed window
        if self._window:
            window, self._window = self._window, []
            self._in_flight = asyncio.ensure_future(self._producer.send(window))

    async def _wait(self) -> None:
        if self._in_flight is not None:
            task, self._in_flight = self._in_flight, None
            await task

    async def close(self) -> None:
        """After an error: let the window in flight settle (its outcome no longer matters)."""
        if self._in_flight is not None and not self._in_flight.done():
            self._in_flight.cancel()
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])
            if not self._in_flight.cancelled():
                self._in_flight.exception()
