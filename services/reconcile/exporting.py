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

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.reconcile.keys import KEY_TRANSFORMS, RECONCILIATION_KEYS, declared_key_sql
from services.reconcile.metrics import NoReconcileMetrics, ReconcileMetrics
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
_KEYS = RECONCILIATION_KEYS
_TRANSFORMS = KEY_TRANSFORMS


# A declared ID must survive the platform's file formats: printable ASCII without separators.
# (Postgres caps regex repetition counts at 255, hence the separate length test.)
_VALID_DECLARED = "{expr} ~ '^[!-~]+$' AND length({expr}) <= 256 AND {expr} !~ '[,=:]'"

_CURRENT_IDS: dict[tuple[str, str | None, str], str] = {
    ("ecid", None, "none"): (
        "SELECT DISTINCT v.ecid AS id FROM list_member lm JOIN visitor_link v USING (recipient_id) "
        "WHERE lm.list_id = $1"
    ),
    **{
        ("declared", key, transform): (
            f"SELECT DISTINCT {declared_key_sql(key, transform)} AS id "  # noqa: S608
            "FROM list_member lm JOIN recipient r USING (recipient_id) "
            f"WHERE lm.list_id = $1 AND {_VALID_DECLARED.format(expr=declared_key_sql(key, transform))}"
        )
        for key in _KEYS
        for transform in _TRANSFORMS
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
            f"WHERE lm.list_id = $1 AND NOT coalesce({_VALID_DECLARED.format(expr=declared_key_sql(key, transform))}, "
            "false)"
        )
        for key in _KEYS
        for transform in _TRANSFORMS
    },
}


def diff_sql(current_ids: str, mode: str) -> str:
    """(id, is_add) rows: what to add to the audience, and (mirror/full) what the bridge must remove."""
    adds_only_new = mode != "full"
    adds = (
        f"SELECT c.id, true AS is_add FROM ({current_ids}) c"  # noqa: S608
        + (
            " WHERE NOT EXISTS (SELECT 1 FROM exported_member e WHERE e.audience_id = $2 AND e.id = c.id)"
            if adds_only_new
            else ""
        )
    )
    if mode == "append":
        return f"{adds} ORDER BY 2 DESC, 1"
    removes = (
        "SELECT e.id, false AS is_add FROM exported_member e WHERE e.audience_id = $2 "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM ({current_ids}) c WHERE c.id = e.id)"
    )
    return f"{adds} UNION ALL {removes} ORDER BY 2 DESC, 1"


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
        metrics: ReconcileMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = batches_topic
        self._status = status
        self._batch_size = min(batch_size, MAX_IDS_PER_BATCH)
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
        sql = diff_sql(_CURRENT_IDS[source.kind], mode)
        pending: list[OutgoingMessage] = []
        adds: list[str] = []
        removes: list[str] = []
        seq = total_adds = total_removes = 0

        def batch(last: bool) -> AudienceExportBatch:
            totals = None
            if last:
                totals = {
                    "received": received,
                    "excluded": excluded,
                    "adds": total_adds,
                    "removes": total_removes,
                    "batches": seq + 1,
                }
            return AudienceExportBatch(
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

        # One snapshot for the whole diff: the run's batches agree with each other.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in conn.cursor(sql, list_id, audience_id, prefetch=self._batch_size):
                if len(adds) + len(removes) >= self._batch_size:
                    pending.append(OutgoingMessage.of(self._topic, batch(last=False)))
                    seq += 1
                    adds, removes = [], []
                    if len(pending) >= SEND_WINDOW:
                        await self._producer.send(pending)
                        pending = []
                if row["is_add"]:
                    adds.append(row["id"])
                    total_adds += 1
                else:
                    removes.append(row["id"])
                    total_removes += 1
        pending.append(OutgoingMessage.of(self._topic, batch(last=True)))
        await self._producer.send(pending)
        return total_adds, total_removes, seq + 1
