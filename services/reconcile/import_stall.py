"""Every import run ends: one whose batches stopped arriving for ``IMPORT_RUN_STALL_S`` ends ``failed``.

A full snapshot that lost a batch (dead-lettered, or never produced: ingest died and its drop-zone batch was
given up) would otherwise stay ``progress`` for ever, its staged IDs with it. Each look is one statement: the
stalled runs move to ``failed`` with a reason naming the setting, and their staged IDs are deleted in the same
transaction; their status events and the run metric follow once it committed.
"""

from __future__ import annotations

import asyncio

from shared.db import Pool, acquire
from shared.logging import get_logger
from shared.retry import is_transient
from shared.runs import store
from shared.runs.outcome import RunOutcome
from shared.runs.reporter import RunReporter

log = get_logger(__name__)


def stall_reason(stall_s: float) -> str:
    return (
        f"no batch of this import arrived for {stall_s:g} s (IMPORT_RUN_STALL_S): a batch was lost or its "
        "producer gave up; its staged IDs were deleted. Deliver the segment again (or raise IMPORT_RUN_STALL_S "
        "if its batches are just slow)"
    )


def check_interval_s(stall_s: float) -> float:
    """How often to look: a tenth of the stall period, between 1 s and a minute."""
    return max(1.0, min(60.0, stall_s / 10))


async def fail_stalled_imports(pool: Pool, stall_s: float) -> list[RunOutcome]:
    """End as ``failed`` every live import run not updated for ``stall_s``, its staging deleted."""
    async with acquire(pool) as conn, conn.transaction():
        outcomes = await store.fail_stalled_imports(conn, stall_s, stall_reason(stall_s))
        if outcomes:
            await conn.execute(
                "DELETE FROM import_stage_batch WHERE run_id = ANY($1::uuid[])", [o.run_id for o in outcomes]
            )
    for outcome in outcomes:
        log.warning("import_run_stalled_failed", run_id=str(outcome.run_id), audience_id=outcome.audience_id)
    return outcomes


async def fail_stalled_periodically(pool: Pool, reporter: RunReporter, stall_s: float) -> None:
    """For the service's life; Postgres or Kafka being away is waited out, anything else stops the service."""
    while True:
        await asyncio.sleep(check_interval_s(stall_s))
        try:
            for outcome in await fail_stalled_imports(pool, stall_s):
                await reporter.report(outcome)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("import_stall_check_retry_later", error=type(exc).__name__)
