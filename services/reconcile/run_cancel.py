"""Ending a run an operator gives up on: ``audience-bridge cancel RUN`` (state ``cancelled``, for good).

An export run may be cancelled while the bridge's own work on it is under way or stopped (``started``,
``progress``, ``blocked``, ``failed``): nothing of it reached the platform's processing, so
``exported_member`` (what the platform applied) stays as it is, and the next request of the audience is
diffed against it. Publish works only on live runs and a retry only on failed ones, so a cancelled run is
never written or retried. Cancelling waits (a bounded time) for publish to finish writing the run's files if
it is doing so right now; a run whose files are already on the platform (``uploaded``) is refused: the
platform applies them whatever the bridge does, and the run ends with its receipts.

An import run may be cancelled when its snapshot was held back (``blocked``): its staged IDs are dropped
and the list stays as it is. A live import is refused: its delta batches apply as they come.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import asyncpg

from services.reconcile.export_locks import lock_audience, publish_run_lock
from shared.errors import PermanentError
from shared.logging import get_logger
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.states import RUN_STATES, TRANSITIONS, RunState

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

CANCELLABLE: Final[dict[str, frozenset[RunState]]] = {
    "export": frozenset(s for s in RUN_STATES if "cancelled" in TRANSITIONS[s]),
    "import": frozenset({"blocked"}),
}


class CancelRefused(PermanentError):
    """The run cannot be cancelled from where it is."""


def refusal(direction: str, state: str) -> str | None:
    """Why a run of this direction cannot be cancelled in this state (None: it can)."""
    if state in CANCELLABLE.get(direction, frozenset()):
        return None
    if state == "uploaded":
        return (
            "its files are on the platform, which applies them whatever the bridge does: the run ends with the "
            "platform's receipts"
        )
    if direction == "import" and state in ("started", "progress"):
        return "a live import applies its batches as they come: wait for it to end"
    return f"the run has ended already ({state})"


async def cancel_run(conn: Connection, run_id: uuid.UUID, cancelled_by: str, *, wait_s: float = 10.0) -> RunOutcome:
    """Cancel the run; raises :class:`CancelRefused` with why when it cannot be."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT direction, audience_id FROM run WHERE run_id = $1", run_id)
        if row is None:
            raise store.UnknownRun("no run with this id", run_id=str(run_id))
        if row["direction"] == "export":
            await lock_audience(conn, row["audience_id"])
            await _wait_for_publish(conn, run_id, wait_s)
        run = await store.lock(conn, run_id, row["direction"])
        why = refusal(run["direction"], run["state"])
        if why is not None:
            raise CancelRefused(why, run_id=str(run_id), state=run["state"])
        if run["direction"] == "import":
            await conn.execute("DELETE FROM import_stage_batch WHERE run_id = $1", run_id)
        outcome = await store.move(conn, run_id, "cancelled", reason=f"cancelled by {cancelled_by}")
    log.warning("run_cancelled", run_id=str(run_id), direction=row["direction"], cancelled_by=cancelled_by)
    return outcome


async def _wait_for_publish(conn: Connection, run_id: uuid.UUID, wait_s: float) -> None:
    """Take the run's publish lock (held while publish writes the run's files), waiting at most ``wait_s``."""
    await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{max(1, int(wait_s * 1000))}ms")
    try:
        await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", publish_run_lock(run_id))
    except asyncpg.LockNotAvailableError:
        raise CancelRefused(
            "publish is writing this run's files right now: try again in a moment", run_id=str(run_id)
        ) from None
    await conn.execute("SELECT set_config('lock_timeout', '0', true)")
