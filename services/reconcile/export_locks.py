"""The Postgres advisory locks that serialise work on one export audience or one export run.

* per audience (transaction-scoped): opening a run, deciding a request waits, rebinding, releasing and
  cancelling take it, so two requests of one audience (from two partitions or two replicas) never diff
  against the same ``exported_member`` at once;
* per request (session-scoped, for the whole of its handling): two workers handed the same request (a Kafka
  redelivery after a rebalance, two replicas resuming the same waiting request) take turns, and the second
  finds it emitted, instead of superseding an attempt that is still being emitted;
* per run: the lock publish holds while it writes a run's files and applies it
  (``services/publish/publisher.py``, ``_run_lock``). Failing a stuck run or cancelling one takes it too,
  so a run is never ended under publish while publish is finishing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

# Keys of the two-integer form: they can never meet the one-bigint keys publish and the migrations use.
_AUDIENCE_SPACE: Final = 0x41_42_45_58  # "ABEX"
_REQUEST_SPACE: Final = 0x41_42_52_51  # "ABRQ"


def audience_lock(audience_id: str) -> tuple[int, int]:
    digest = hashlib.blake2b(audience_id.encode(), digest_size=4).digest()
    return _AUDIENCE_SPACE, int.from_bytes(digest, "big", signed=True)


def request_lock(request_id: uuid.UUID) -> tuple[int, int]:
    # Two requests may share a key: they then take turns, which is all the lock is for.
    return _REQUEST_SPACE, int.from_bytes(request_id.bytes[:4], "big", signed=True)


def publish_run_lock(run_id: uuid.UUID) -> int:
    """The key publish locks a run with (same derivation as its ``_lock_key``; a unit test holds them equal)."""
    return int.from_bytes(run_id.bytes[:8], "big", signed=True)


async def lock_audience(conn: Connection, audience_id: str) -> None:
    """Until the caller's transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)", *audience_lock(audience_id))


async def try_lock_publish_run(conn: Connection, run_id: uuid.UUID) -> bool:
    """Until the caller's transaction ends; False while publish holds it (writing the run's files)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1::bigint)", publish_run_lock(run_id)))


@contextlib.asynccontextmanager
async def request_turn(conn: Connection, request_id: uuid.UUID, *, wait: bool = True) -> AsyncIterator[bool]:
    """Hold the request's lock on ``conn`` (outside any transaction) while the request is handled. Released by
    Postgres with the session if the process dies, so a crashed worker never holds a request.

    Yields whether it is held: with ``wait=False`` (the export queue handing back a waiting request), False at
    once when another worker has the request's turn: that worker is emitting it, or hands it back if it fails."""
    key = request_lock(request_id)
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1::int, $2::int)", *key)
    elif not await conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", *key):
        yield False
        return
    try:
        yield True
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1::int, $2::int)", *key)
