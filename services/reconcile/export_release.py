"""Releasing an export run the mass-removal guard held back (``audience-bridge release RUN``).

The operator is first shown the plan (:func:`release_plan`: what the audience holds, what the run would add
and remove, what it would hold after), counted now; on their word, :func:`release_export` diffs the run
again (the list and what the platform applied, as they are at release) and emits it without the guard. A
run whose audience has another run under way, or was bound to another list since, is not released.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.reconcile.export_binding import binding_of
from services.reconcile.export_diff import CURRENT_IDS, diff_sql, load_source
from services.reconcile.export_locks import lock_audience, try_lock_publish_run
from services.reconcile.exporting import Exporter, OpenedRun
from shared.db import acquire
from shared.errors import PermanentError
from shared.logging import get_logger
from shared.runs import store
from shared.runs.outcome import RunOutcome, int_map

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection, or a pool's proxy of one


class ReleaseRefused(PermanentError):
    """The run cannot be released (not a held export, its audience busy or bound to another list)."""


@dataclass(frozen=True, slots=True)
class ExportReleasePlan:
    run_id: uuid.UUID
    audience_id: str
    audience_name: str
    list_name: str | None
    mode: str
    reason: str | None
    shared: int  # IDs the platform holds from the bridge now
    adds: int
    removes: int

    @property
    def after(self) -> int:
        return self.shared + self.adds - self.removes


async def _source_of(conn: Connection, run: Mapping[str, Any]) -> Any:
    name = await conn.fetchval("SELECT name FROM data_source WHERE data_source_id = $1", run["data_source_id"])
    if name is None:
        raise ReleaseRefused("the run's data source is gone", run_id=str(run["run_id"]))
    return await load_source(conn, name)


async def _check_releasable(conn: Connection, run: Mapping[str, Any]) -> None:
    if run["state"] != "blocked" or run["request_id"] is None:
        raise ReleaseRefused(
            "only a held-back export run can be released", run_id=str(run["run_id"]), state=run["state"]
        )
    live = await store.live_export_of(conn, run["audience_id"], other_than_request=run["request_id"])
    if live is not None:
        raise ReleaseRefused(
            "another run of this audience is under way: release this one once that one ended", run_id=str(live)
        )
    binding = await binding_of(conn, run["audience_id"])
    if binding is not None and binding.list_id != run["list_id"]:
        raise ReleaseRefused(
            "the audience was bound to another list since this run was held: request a new export",
            run_id=str(run["run_id"]),
        )


async def release_plan(conn: Connection, run_id: uuid.UUID) -> ExportReleasePlan:
    """What releasing the held run would do, counted set-wise in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        run = await _load(conn, run_id)
        await _check_releasable(conn, run)
        source = await _source_of(conn, run)
        counts = {True: 0, False: 0}
        for query in diff_sql(CURRENT_IDS[source.kind], run["mode"]):
            args = (run["list_id"], run["audience_id"]) if query.by_audience else (run["list_id"],)
            counts[query.is_add] = int(await conn.fetchval(f"SELECT count(*) FROM ({query.sql}) q", *args))  # noqa: S608
        shared = int(
            await conn.fetchval("SELECT count(*) FROM exported_member WHERE audience_id = $1", run["audience_id"])
        )
        binding = await binding_of(conn, run["audience_id"])
    # A full run rewrites the whole audience: everything it sends is an add, what it lacks is removed.
    return ExportReleasePlan(
        run_id=run_id,
        audience_id=run["audience_id"],
        audience_name=binding.audience_name if binding else run["audience_id"],
        list_name=binding.list_name if binding else None,
        mode=run["mode"],
        reason=run["reason"],
        shared=shared,
        adds=counts[True] if run["mode"] != "full" else counts[True] - (shared - counts[False]),
        removes=counts[False],
    )


async def _load(conn: Connection, run_id: uuid.UUID) -> Mapping[str, Any]:
    row = await conn.fetchrow("SELECT * FROM run WHERE run_id = $1 AND direction = 'export'", run_id)
    if row is None:
        raise store.UnknownRun("no export run with this id", run_id=str(run_id))
    return dict(row)


async def release_export(exporter: Exporter, pool: asyncpg.Pool, run_id: uuid.UUID, released_by: str) -> RunOutcome:
    """Move the held run back to work and emit it, diffed now, without the guard."""
    async with acquire(pool) as conn:
        run = await _load(conn, run_id)
        async with conn.transaction():
            await lock_audience(conn, run["audience_id"])
            run = await store.lock(conn, run_id, "export")
            await _check_releasable(conn, run)
            source = await _source_of(conn, run)
            await store.move(conn, run_id, "progress", reason=None, released_by=released_by)
        counts = int_map(run["counts"])
        opened = OpenedRun(run_id, counts.get("received", 0), counts.get("excluded", 0))
        log.info("export_run_released", run_id=str(run_id), audience_id=run["audience_id"], released_by=released_by)
        try:
            return await exporter.emit_run(
                conn, opened, run["request_id"], run["list_id"], source, run["audience_id"], run["mode"], guard=False
            )
        except Exception as exc:
            await _fail_unsent(exporter, pool, run_id, exc)
            raise


async def _fail_unsent(exporter: Exporter, pool: asyncpg.Pool, run_id: uuid.UUID, exc: Exception) -> None:
    """A released run whose batches could not all be sent ends ``failed`` now, saying how to ask again, rather
    than sitting in ``progress`` until ``EXPORT_RUN_TIMEOUT_S`` with its audience's next requests behind it (a
    release cannot be repeated: the run is no longer held). Left alone if publish is finishing it (all its
    batches arrived) or it moved on; if Postgres is gone too, the timeout ends it."""
    reason = (
        f"released, but its batches could not all be sent ({type(exc).__name__}): none of it reaches the platform; "
        f"ask for the export again (POST /api/runs/{run_id}/retry)"
    )
    try:
        async with acquire(pool) as conn, conn.transaction():
            if not await try_lock_publish_run(conn, run_id):
                return
            run = await store.lock(conn, run_id, "export")
            if run["state"] != "progress":
                return
            outcome = await store.move(conn, run_id, "failed", reason=reason)
        log.warning("export_release_unsent", run_id=str(run_id), error=type(exc).__name__)
        await exporter.report(outcome)
    except Exception as again:  # the caller's error is the one to tell: this is the best that could be done
        log.warning("export_release_unsent_not_ended", run_id=str(run_id), error=type(again).__name__)
