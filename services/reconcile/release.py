"""Releasing a held-back full snapshot on an operator's word: first what it would do, then doing it.

A full run the guards held back (:mod:`services.reconcile.import_snapshot`) keeps its IDs staged. Released, it
is matched again, against the recipients of now, and applied as its audience's list. :func:`plan_release`
says what that would change (members added and removed, the list's size before and after) without changing
anything: the very steps of :func:`release_run`, in a transaction that is always rolled back, so the plan
cannot drift from what a release does. Either refuses a run that is not held back, and a run older than the
audience's last applied one: its snapshot would put back a segment the platform has replaced since.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.reconcile.import_snapshot import MemberChanges, apply_snapshot, match_snapshot
from services.reconcile.import_target import Connection, ImportTarget, load_target
from shared.errors import PermanentError
from shared.runs import store
from shared.runs.outcome import RunOutcome


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """What releasing a run would do to its list, were nothing else to change first."""

    run_id: uuid.UUID
    audience_id: str
    list_name: str
    held_because: str | None
    matched: int  # the snapshot's distinct IDs matching a recipient now
    unmatched: int
    size_before: int
    changes: MemberChanges

    @property
    def size_after(self) -> int:
        return self.size_before + self.changes.added - self.changes.removed


async def _releasable(conn: Connection, run_id: uuid.UUID) -> tuple[Mapping[str, Any], ImportTarget]:
    """The run, locked, and its audience's target; raises when the run may not be released."""
    run = await store.lock(conn, run_id, "import")
    # The lifecycle would also let a failed run succeed (an export's retry): only a held-back one is released.
    if run["state"] != "blocked":
        raise PermanentError("only a blocked run can be released", run_id=str(run_id), state=run["state"])
    newer = await conn.fetchrow(
        """SELECT run_id, started_at FROM run
            WHERE direction = 'import' AND audience_id = $1 AND state = 'succeeded' AND started_at > $2
            ORDER BY started_at DESC LIMIT 1""",
        run["audience_id"],
        run["started_at"],
    )
    if newer is not None:
        raise PermanentError(
            "a newer run of this audience was applied since: releasing this older snapshot would undo it",
            run_id=str(run_id),
            started_at=run["started_at"].isoformat(),
            newer_run=str(newer["run_id"]),
            newer_started_at=newer["started_at"].isoformat(),
        )
    return run, await load_target(conn, run["audience_id"])


async def plan_release(conn: Connection, run_id: uuid.UUID) -> ReleasePlan:
    """What :func:`release_run` would do now, computed by doing it in a transaction that is then rolled back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        run, target = await _releasable(conn, run_id)
        size_before = await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", target.list_id)
        list_name = await conn.fetchval("SELECT name FROM list WHERE list_id = $1", target.list_id)
        matching = await match_snapshot(conn, run_id, target)
        changes = await apply_snapshot(conn, run_id, target)
        return ReleasePlan(
            run_id=run_id,
            audience_id=target.audience_id,
            list_name=list_name,
            held_because=run["reason"],
            matched=matching["matched"],
            unmatched=matching["unmatched"],
            size_before=size_before,
            changes=changes,
        )
    finally:
        await transaction.rollback()


async def release_run(conn: Connection, run_id: uuid.UUID, released_by: str) -> RunOutcome:
    """Apply a full snapshot that the guards held back, on an operator's say-so. Its held-back reason goes
    with the move to ``succeeded`` (:func:`shared.runs.store.move`)."""
    async with conn.transaction():
        _, target = await _releasable(conn, run_id)
        # Matched again, against the recipients of now: its unmatched IDs were kept when it was held back.
        await match_snapshot(conn, run_id, target)
        changes = await apply_snapshot(conn, run_id, target)
        return await store.move(conn, run_id, "succeeded", released_by=released_by, counts=changes.counts())
