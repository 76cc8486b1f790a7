"""A message given up after HANDLER_MAX_ATTEMPTS ends its run as ``failed``, never left open.

Called by the consumer (:mod:`shared.kafka.batch_processor`) before the message is dead-lettered: the run's
reason says what failed (and, for a statement timeout, which setting to raise), its status event and the run
metric go out as for any other end. A run already ended (failed before, or an operator's move) is left as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from shared.db import Pool, acquire
from shared.kafka.batch_processor import GivenUp
from shared.logging import get_logger
from shared.messages import AudienceMembership
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter
from shared.runs.states import IllegalTransition
from shared.runs.store import Connection, NewRun, UnknownRun, move, open_run

log = get_logger(__name__)


def runs_given_up(given_up: Sequence[GivenUp]) -> dict[uuid.UUID, GivenUp]:
    """Each run of ``given_up`` with its first given-up message (sorted: rows locked in one order)."""
    first: dict[uuid.UUID, GivenUp] = {}
    for item in given_up:
        if item.run_id is not None:
            first.setdefault(item.run_id, item)
    return dict(sorted(first.items()))


def unrecorded_run(item: GivenUp) -> NewRun | None:
    """The run to record for a membership batch given up before its run was opened (its first batch): the
    run must end ``failed``, not be missing. An export's run is opened before its batches are produced."""
    message = item.delivery.message
    if not isinstance(message, AudienceMembership):
        return None
    return NewRun(
        run_id=message.run_id,
        direction="import",
        audience_id=message.audience_id,
        mode=message.mode,
        id_type=message.id_type,
        state="failed",
    )


async def _fail(conn: Connection, run_id: uuid.UUID, item: GivenUp) -> RunOutcome | None:
    try:
        return await move(conn, run_id, "failed", reason=item.reason)
    except UnknownRun:
        new = unrecorded_run(item)
        if new is None:
            raise
        await open_run(conn, new)
        return await move(conn, run_id, "failed", reason=item.reason)


async def fail_runs_given_up(pool: Pool, reporter: RunReporter, given_up: Sequence[GivenUp]) -> list[RunOutcome]:
    """Move the runs of ``given_up`` to ``failed`` in one transaction, then report each."""
    runs = runs_given_up(given_up)
    if not runs:
        return []
    ended: list[RunOutcome] = []
    async with acquire(pool) as conn, conn.transaction():
        for run_id, item in runs.items():
            try:
                outcome = await _fail(conn, run_id, item)
            except (UnknownRun, IllegalTransition) as exc:
                # Ended already (succeeded, cancelled by an operator), or an unknown export: nothing to end.
                log.warning("given_up_run_not_failed", run_id=str(run_id), error=type(exc).__name__)
                continue
            if outcome is not None:
                ended.append(outcome)
    for outcome in ended:
        await reporter.report(outcome)
    return ended
