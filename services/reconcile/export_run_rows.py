"""The rows an export attempt writes before its diff: its request, its attempt's run, its audience, and the
recipients it leaves out (without an ID of the data source: ``export_excluded``; opted out: counted apart).

The statements are constants, the run row a pure function of the request; :mod:`services.reconcile.exporting`
calls these in the attempt's transaction, under the audience's lock.
"""

from __future__ import annotations

import uuid
from typing import Any, Final, Literal

from services.reconcile.export_diff import EXCLUDED, OPTED_OUT, Source, export_run_id
from shared.messages import AudienceExportRequest
from shared.runs import store

# A redelivered request keeps the first copy of itself (the audit trail says what was asked first).
RECORD_REQUEST: Final = """
INSERT INTO export_request (request_id, audience_id, attempts, requested_by, request, requested_via)
VALUES ($1, $2, 0, $3, $4::jsonb, $5)
ON CONFLICT (request_id) DO UPDATE SET request = coalesce(export_request.request, EXCLUDED.request)
RETURNING attempts, emitted_run, waiting_since
"""
# Each attempt (and a refusal) is numbered by the request's row: its run id is its own. A request that waited
# keeps ``waiting_since`` until its run is emitted (EMITTED): an attempt that fails before that (Postgres or Kafka
# lost while it emits) is handed back by the export queue, which no Kafka redelivery would do.
NEXT_ATTEMPT: Final = "UPDATE export_request SET attempts = attempts + 1 WHERE request_id = $1 RETURNING attempts"
# The request's outcome: its emitted (or refused) run; it no longer waits.
EMITTED: Final = "UPDATE export_request SET emitted_run = $2, waiting_since = NULL WHERE request_id = $1"
# The audience's list is set once, when it is created (an operator moves it: audience rebind).
ENSURE_AUDIENCE: Final = """
INSERT INTO shared_audience (audience_id, name, direction, data_source_id, list_id, export_mode)
VALUES ($1, $2, 'export', $3, $4, $5)
ON CONFLICT (audience_id) DO UPDATE
SET list_id = coalesce(shared_audience.list_id, EXCLUDED.list_id), export_mode = EXCLUDED.export_mode,
    updated_at = now()
"""


async def record_request(conn: Any, request: AudienceExportRequest, audience_id: str) -> Any:
    """The request's row (kept as first received): its attempts so far, emitted run and waiting mark."""
    return await conn.fetchrow(
        RECORD_REQUEST,
        request.request_id,
        audience_id,
        request.requested_by,
        request.model_dump_json(),
        request.requested_via,
    )


async def next_attempt(conn: Any, request_id: uuid.UUID) -> uuid.UUID:
    """The run id of the request's next attempt (counted on its row, so each attempt has its own)."""
    return export_run_id(request_id, await conn.fetchval(NEXT_ATTEMPT, request_id))


async def record_emitted(conn: Any, request_id: uuid.UUID, run_id: uuid.UUID) -> None:
    """The request's outcome is this (emitted, held or refused) run: it no longer waits."""
    await conn.execute(EMITTED, request_id, run_id)


async def ensure_audience(
    conn: Any, request: AudienceExportRequest, list_id: int, source: Source, audience_id: str
) -> None:
    await conn.execute(
        ENSURE_AUDIENCE, audience_id, request.audience_name, source.data_source_id, list_id, request.mode
    )


def new_run(
    run_id: uuid.UUID,
    request: AudienceExportRequest,
    list_id: int,
    source: Source,
    audience_id: str,
    counts: dict[str, int],
    state: Literal["progress", "failed"] = "progress",
) -> store.NewRun:
    """The run row of one attempt of ``request``."""
    return store.NewRun(
        run_id=run_id,
        direction="export",
        audience_id=audience_id,
        mode=request.mode,
        data_source_id=source.data_source_id,
        list_id=list_id,
        id_type=source.id_type,
        state=state,
        request_id=request.request_id,
        dpid=source.dpid,
        counts=counts,
        requested_by=request.requested_by,
        requested_via=request.requested_via,
    )


def left_out_counts(excluded: int, opted_out: int) -> dict[str, int]:
    """The run's counts of recipients left out: ``opted_out`` only when there are any (a run's counts name
    what happened to it)."""
    return {"excluded": excluded} | ({"opted_out": opted_out} if opted_out else {})


async def record_left_out(conn: Any, run_id: uuid.UUID, list_id: int, source: Source) -> int:
    """List the run's recipients without an ID in ``export_excluded`` and count them and the opted-out ones
    on the run; returns how many were excluded. ``source.kind`` must be one CURRENT_IDS knows."""
    status = await conn.execute(
        f"INSERT INTO export_excluded (run_id, recipient_id) SELECT $2::uuid, x.recipient_id "  # noqa: S608
        f"FROM ({EXCLUDED[source.kind]}) x",
        list_id,
        run_id,
    )
    excluded = int(status.rsplit(" ", 1)[-1])
    # Consent: opted-out members are left out (and leave a mirror/full audience), counted apart.
    opted_out = int(await conn.fetchval(OPTED_OUT, list_id))
    await store.set_counts(conn, run_id, left_out_counts(excluded, opted_out))
    return excluded
