"""Export requests that wait for an earlier run of their audience, and export runs that never end.

Runs of one audience are diffed one after the other: a diff against what the platform has not applied yet
could miss a removal. A request whose audience has a run under way (or an earlier request still waiting)
is therefore recorded as waiting in ``export_request`` (the request itself and ``waiting_since``) and the
consumer moves on: requests of other audiences never wait behind it, in this poll or the next.

:class:`ExportQueue` ticks every ``EXPORT_WAIT_POLL_S``: it first ends as ``failed`` every export run whose
own work (``started``, ``progress``: batches being emitted, staged, files written) has not moved for
``EXPORT_RUN_TIMEOUT_S`` (its batches were refused, lost, or its publisher is gone), then hands each
audience's oldest waiting request back to the exporter once nothing of its audience is under way. A request
stays waiting until its run is emitted: an attempt that fails on the way (Postgres or Kafka lost while it
emits; nothing redelivers a request the consumer has moved past) is handed back on the next tick, and the
new attempt supersedes it. A run publish is finishing (it holds the run's lock) is never failed under it.
``uploaded`` runs wait for the platform's receipts, which publish bounds itself (``EXPORT_RECEIPT_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

import asyncpg

from services.reconcile.export_locks import try_lock_publish_run
from shared.db import acquire
from shared.logging import get_logger
from shared.messages import AudienceExportRequest
from shared.retry import Backoff, is_transient
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.runs.states import LIVE_STATES, RunState

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

# The bridge's own work on a run; past these, the platform has the files and publish follows its receipts.
STALLING_STATES: Final[tuple[RunState, ...]] = ("started", "progress")
# Requests handed back per tick at most (one per audience): the rest wait for the next tick.
_RESUME_LIMIT: Final = 100


def stuck_reason(timeout_s: float) -> str:
    return (
        f"no progress for {timeout_s:g} s (EXPORT_RUN_TIMEOUT_S): its batches or files never completed "
        "(batches refused or lost, publish unavailable); the next request of its audience goes ahead"
    )


async def ahead_of(
    conn: Connection, audience_id: str, request_id: uuid.UUID, waiting_since: datetime | None
) -> str | None:
    """What the request must wait for (None: nothing): a live run of its audience from another request, or
    a request of the audience that has waited longer (requests of one audience keep their order)."""
    live = await store.live_export_of(conn, audience_id, other_than_request=request_id)
    if live is not None:
        return f"run {live}"
    earlier = await conn.fetchval(
        """SELECT request_id FROM export_request
            WHERE audience_id = $1 AND waiting_since IS NOT NULL AND emitted_run IS NULL AND request_id <> $2
              AND ($3::timestamptz IS NULL OR (waiting_since, request_id) < ($3, $2))
            ORDER BY waiting_since LIMIT 1""",
        audience_id,
        request_id,
        waiting_since,
    )
    return None if earlier is None else f"request {earlier}"


async def start_waiting(conn: Connection, request_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE export_request SET waiting_since = coalesce(waiting_since, now()) WHERE request_id = $1", request_id
    )


async def stop_waiting(conn: Connection, request_id: uuid.UUID) -> None:
    """The request ended without a run of its own (refused): it no longer holds its audience's queue."""
    await conn.execute("UPDATE export_request SET waiting_since = NULL WHERE request_id = $1", request_id)


async def resumable(conn: Connection) -> list[AudienceExportRequest]:
    """The oldest waiting request of each audience that has no run under way, oldest first."""
    rows = await conn.fetch(
        """SELECT f.request FROM (
               SELECT DISTINCT ON (w.audience_id) w.request_id, w.audience_id, w.request, w.waiting_since
                 FROM export_request w
                WHERE w.waiting_since IS NOT NULL AND w.emitted_run IS NULL AND w.request IS NOT NULL
                ORDER BY w.audience_id, w.waiting_since, w.request_id) f
            WHERE NOT EXISTS (
               SELECT 1 FROM run r
                WHERE r.direction = 'export' AND r.audience_id = f.audience_id AND r.state = ANY($1::text[])
                  AND r.request_id IS DISTINCT FROM f.request_id)
            ORDER BY f.waiting_since LIMIT $2""",
        sorted(LIVE_STATES),
        _RESUME_LIMIT,
    )
    return [AudienceExportRequest.model_validate_json(r["request"]) for r in rows]


async def waiting_count(conn: Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM export_request WHERE waiting_since IS NOT NULL AND emitted_run IS NULL"
        )
    )


async def fail_stuck_runs(pool: asyncpg.Pool, timeout_s: float) -> list[RunOutcome]:
    """End as ``failed`` every export run whose own work has not moved for ``timeout_s``."""
    candidates = await pool.fetch(
        """SELECT run_id FROM run WHERE direction = 'export' AND state = ANY($1::text[])
              AND updated_at < now() - make_interval(secs => $2)""",
        list(STALLING_STATES),
        timeout_s,
    )
    ended = []
    for candidate in candidates:
        async with acquire(pool) as conn, conn.transaction():
            # Publish is writing this run's files right now: it is not stuck; look again next tick.
            if not await try_lock_publish_run(conn, candidate["run_id"]):
                continue
            run = await store.lock(conn, candidate["run_id"], "export")
            still = await conn.fetchval(
                "SELECT $1 = ANY($2::text[]) AND $3 < now() - make_interval(secs => $4)",
                run["state"],
                list(STALLING_STATES),
                run["updated_at"],
                timeout_s,
            )
            if not still:
                continue
            outcome = await store.move(conn, run["run_id"], "failed", reason=stuck_reason(timeout_s))
        log.warning("export_run_stuck_failed", run_id=str(outcome.run_id), audience_id=outcome.audience_id)
        ended.append(outcome)
    return ended


class Resumer(Protocol):
    async def resume(self, requests: Sequence[AudienceExportRequest]) -> None: ...


class ExportQueue:
    """The waiting requests and the stuck runs of exports, looked at every ``EXPORT_WAIT_POLL_S``."""

    def __init__(self, pool: asyncpg.Pool, exporter: Resumer, reporter: RunReporter, *, run_timeout_s: float) -> None:
        self._pool = pool
        self._exporter = exporter
        self._reporter = reporter
        self._run_timeout_s = run_timeout_s

    async def tick(self) -> int:
        """One look; returns how many waiting requests were handed back."""
        for outcome in await fail_stuck_runs(self._pool, self._run_timeout_s):
            await self._reporter.report(outcome)
        async with acquire(self._pool) as conn:
            requests = await resumable(conn)
        if requests:
            await self._exporter.resume(requests)
        return len(requests)

    async def run(
        self,
        interval_s: float,
        *,
        backoff_max_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """For the service's life; Postgres or Kafka being away is waited out, anything else stops it. After a
        failure the next look waits longer (jittered, doubling, up to ``backoff_max_s`` more): a request handed
        back while Kafka is away makes a new attempt (a run) each look, superseding the last."""
        backoff = Backoff(initial_s=interval_s, max_s=backoff_max_s)
        delay = interval_s
        while True:
            await sleep(delay)
            try:
                await self.tick()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = interval_s + backoff.next_delay()
                log.warning("export_queue_retry_later", error=type(exc).__name__, retry_in_s=round(delay, 2))
            else:
                backoff.reset()
                delay = interval_s
