"""The ``run`` table: every write of it, and the reads more than one service makes.

Each function takes a connection and runs inside the caller's transaction, so a run's state commits with
the effects that make it true (list membership, ``exported_member``, staged batches); the caller reports
the returned :class:`~shared.runs.outcome.RunOutcome` once that transaction has committed. Every change
of state goes through :func:`move`, which the lifecycle table (:mod:`shared.runs.states`) guards inside
the UPDATE itself: a move from a state the table does not allow changes nothing and raises
:class:`~shared.runs.states.IllegalTransition`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.errors import PermanentError, TransientError
from shared.logging import redact_text
from shared.runs.outcome import RunOutcome, int_map, match_rate
from shared.runs.states import (
    ENDED_STATES,
    LIVE_STATES,
    Direction,
    RunState,
    check_transition,
    sources_of,
)

Connection = Any  # asyncpg.Connection, or a pool's proxy of one (inside the caller's transaction)


class UnknownRun(PermanentError):
    """No run with this id (or not of the expected direction)."""


class _Keep:
    """Leave it as it is (the run's reason; its match rate, unless the move computes it)."""


KEEP: Final = _Keep()


@dataclass(frozen=True, slots=True)
class NewRun:
    run_id: uuid.UUID
    direction: Direction
    audience_id: str
    mode: str
    data_source_id: int | None = None
    list_id: int | None = None
    id_type: str | None = None
    state: RunState = "started"
    request_id: uuid.UUID | None = None
    dpid: int | None = None
    counts: Mapping[str, int] | None = None
    # The audit trail of an export: who asked, and through what (api, cli, kafka).
    requested_by: str | None = None
    requested_via: str | None = None


@dataclass(frozen=True, slots=True)
class BatchTally:
    """A run's progress after one more of its batches was applied."""

    counts: dict[str, int]
    batches_applied: int
    last_seq: int | None
    state: RunState

    @property
    def complete(self) -> bool:
        return self.last_seq is not None and self.batches_applied == self.last_seq + 1

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


def _json(counts: Mapping[str, int]) -> str:
    return orjson.dumps(dict(counts)).decode()


_COLUMNS = "run_id, direction, audience_id, state, counts, match_rate, reason, id_type"


def _outcome(row: Mapping[str, Any]) -> RunOutcome:
    counts = int_map(row["counts"])
    return RunOutcome(
        run_id=row["run_id"],
        direction=row["direction"],
        state=row["state"],
        audience_id=row["audience_id"],
        counts=counts,
        match_rate=match_rate(row["direction"], row["id_type"], counts),
        reason=row["reason"],
    )


async def open_run(conn: Connection, run: NewRun) -> bool:
    """Record a new run; False when it exists already (a redelivered first batch, a retried request)."""
    check_transition(None, run.state, run_id=run.run_id)
    created = await conn.fetchval(
        """INSERT INTO run (run_id, direction, audience_id, mode, state, data_source_id, list_id, id_type,
                            request_id, dpid, counts, requested_by, requested_via)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13)
           ON CONFLICT (run_id) DO NOTHING RETURNING true""",
        run.run_id,
        run.direction,
        run.audience_id,
        run.mode,
        run.state,
        run.data_source_id,
        run.list_id,
        run.id_type,
        run.request_id,
        run.dpid,
        _json(run.counts or {}),
        run.requested_by,
        run.requested_via,
    )
    return bool(created)


async def record_batch(
    conn: Connection, run_id: uuid.UUID, counts: Mapping[str, int], *, seq: int, last: bool
) -> BatchTally:
    """Add one applied batch's counts to its run (a ``started`` run moves to ``progress``); the last batch
    also says how many batches the run has. An ended run keeps its state (its counts still add up)."""
    row = await conn.fetchrow(
        """UPDATE run SET counts = (SELECT jsonb_object_agg(k, coalesce((counts->>k)::bigint, 0)
                                              + coalesce(($2::jsonb->>k)::bigint, 0))
                                      FROM jsonb_object_keys(counts || $2::jsonb) AS k),
                          batches_applied = batches_applied + 1,
                          last_seq = CASE WHEN $3 THEN $4 ELSE last_seq END,
                          state = CASE WHEN state = 'started' THEN 'progress' ELSE state END,
                          updated_at = now()
            WHERE run_id = $1
        RETURNING counts, batches_applied, last_seq, state""",
        run_id,
        _json(counts),
        last,
        seq,
    )
    if row is None:
        raise UnknownRun("no run with this id", run_id=str(run_id))
    return BatchTally(int_map(row["counts"]), row["batches_applied"], row["last_seq"], row["state"])


async def set_counts(conn: Connection, run_id: uuid.UUID, counts: Mapping[str, int]) -> None:
    """Set some of a run's counts (those named replace their old values), its state unchanged."""
    status = await conn.execute(
        "UPDATE run SET counts = counts || $2::jsonb, updated_at = now() WHERE run_id = $1", run_id, _json(counts)
    )
    if status == "UPDATE 0":
        raise UnknownRun("no run with this id", run_id=str(run_id))


async def move(
    conn: Connection,
    run_id: uuid.UUID,
    to: RunState,
    *,
    reason: str | _Keep | None = KEEP,
    counts: Mapping[str, int] | None = None,
    released_by: str | None = None,
    expected_rate: Mapping[str, float] | _Keep | None = KEEP,
) -> RunOutcome:
    """Move a run to ``to`` (with its reason and some counts), if the lifecycle allows it from where it is.

    ``reason`` defaults to: kept on the way to ``progress``, cleared on the way to ``succeeded`` (a released
    run is no longer held back), and required for ``failed`` and ``blocked``. An ended run records when it
    ended and, for an import, its match rate: ``expected_rate``, the rate of the counts the caller knows the
    run to end with, is written by the move itself (a streaming run is small: a round trip is much of its
    cost); a second statement writes the rate of the counts it really ended with when they differ."""
    if isinstance(reason, _Keep):
        if to in ("failed", "blocked"):
            raise ValueError(f"a move to {to} needs its reason")
        reason = KEEP if to == "progress" else None
    row = await conn.fetchrow(
        f"""UPDATE run SET state = $2,
                          reason = CASE WHEN $3 THEN reason ELSE $4 END,
                          counts = counts || $5::jsonb,
                          released_by = coalesce($6, released_by),
                          finished_at = CASE WHEN $2 = ANY($7::text[]) THEN now() ELSE finished_at END,
                          match_rate = CASE WHEN $9 AND $2 = ANY($7::text[]) THEN $10::jsonb ELSE match_rate END,
                          updated_at = now()
             WHERE run_id = $1 AND state = ANY($8::text[])
         RETURNING {_COLUMNS}""",  # noqa: S608 - a constant column list
        run_id,
        to,
        isinstance(reason, _Keep),
        # Shown on the status page and by the CLI: a reason quoting an error loses its secrets here.
        None if isinstance(reason, _Keep) or reason is None else redact_text(reason),
        _json(counts or {}),
        released_by,
        sorted(ENDED_STATES),
        list(sources_of(to)),
        not isinstance(expected_rate, _Keep),
        None if isinstance(expected_rate, _Keep) else _rate_json(expected_rate),
    )
    if row is None:
        current = await conn.fetchval("SELECT state FROM run WHERE run_id = $1", run_id)
        if current is None:
            raise UnknownRun("no run with this id", run_id=str(run_id))
        check_transition(current, to, run_id=run_id)
        # Allowed from where it is now: another transaction moved the run between the two statements.
        raise TransientError("the run changed state concurrently", run_id=str(run_id), current=current, target=to)
    outcome = _outcome(row)
    rate = outcome.match_rate
    written = rate is None if isinstance(expected_rate, _Keep) else _same_rate(expected_rate, rate)
    if to in ENDED_STATES and not written:
        await conn.execute("UPDATE run SET match_rate = $2::jsonb WHERE run_id = $1", run_id, _rate_json(rate))
    return outcome


def _rate_json(rate: Mapping[str, float] | None) -> str | None:
    return None if rate is None else orjson.dumps(dict(rate)).decode()


def _same_rate(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> bool:
    return (None if a is None else dict(a)) == (None if b is None else dict(b))


async def fail_live_attempts(conn: Connection, request_id: uuid.UUID, reason: str) -> list[uuid.UUID]:
    """End every live run of an export request as ``failed`` (a new attempt supersedes them)."""
    check_transition("progress", "failed")
    rows = await conn.fetch(
        """UPDATE run SET state = 'failed', reason = $2, finished_at = now(), updated_at = now()
            WHERE request_id = $1 AND state = ANY($3::text[]) RETURNING run_id""",
        request_id,
        redact_text(reason),
        sorted(LIVE_STATES),
    )
    return [r["run_id"] for r in rows]


async def fail_stalled_imports(conn: Connection, stall_s: float, reason: str) -> list[RunOutcome]:
    """End as ``failed`` every live import run not updated for ``stall_s`` seconds (one statement)."""
    rows = await conn.fetch(
        f"""UPDATE run SET state = 'failed', reason = $2, finished_at = now(), updated_at = now()
             WHERE direction = 'import' AND state = ANY($3::text[])
               AND updated_at < now() - make_interval(secs => $1)
         RETURNING {_COLUMNS}""",  # noqa: S608 - a constant column list
        stall_s,
        reason,
        sorted(LIVE_STATES & set(sources_of("failed"))),
    )
    return [_outcome(row) for row in rows]


async def load(conn: Connection, run_id: uuid.UUID) -> RunOutcome | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM run WHERE run_id = $1", run_id)  # noqa: S608
    return None if row is None else _outcome(row)


async def lock(conn: Connection, run_id: uuid.UUID, direction: Direction) -> Mapping[str, Any]:
    """The run's row, locked for the rest of the transaction (an operator's command racing a service)."""
    row = await conn.fetchrow("SELECT * FROM run WHERE run_id = $1 AND direction = $2 FOR UPDATE", run_id, direction)
    if row is None:
        raise UnknownRun(f"no {direction} run with this id", run_id=str(run_id))
    return dict(row)


async def live_export_of(conn: Connection, audience_id: str, *, other_than_request: uuid.UUID) -> uuid.UUID | None:
    """A live export run of the audience from another request, if there is one."""
    run_id: uuid.UUID | None = await conn.fetchval(
        """SELECT run_id FROM run WHERE direction = 'export' AND audience_id = $1
              AND state = ANY($3::text[]) AND request_id IS DISTINCT FROM $2 LIMIT 1""",
        audience_id,
        other_than_request,
        sorted(LIVE_STATES),
    )
    return run_id


async def latest_of_request(conn: Connection, request_id: uuid.UUID) -> RunOutcome | None:
    """The newest run of an export request."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM run WHERE request_id = $1 ORDER BY started_at DESC LIMIT 1",  # noqa: S608
        request_id,
    )
    return None if row is None else _outcome(row)
