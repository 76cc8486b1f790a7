"""Retention: what the bridge no longer needs goes, periodically, set-based, counted (``ab_retention_purged_total``).

* unmatched IDs not seen for ``UNMATCHED_RETENTION_DAYS`` (no import named them since: re-matching them is moot),
  and clicks still waiting for a recipient the bridge never heard of after as long;
* finished runs after ``RUN_RETENTION_DAYS``: the run row and its details (excluded recipients, applied and
  published batches, files, publish progress, staging). Blocked runs wait for an operator and are kept, as are
  live ones; ``exported_member`` and ``unmatched_id`` name runs too but are state, not detail, and stay;
* staging of ended runs after ``STAGING_RETENTION_HOURS``: an import's staged IDs and an export's staged batches
  (a failed export is retried from them, ``audience-bridge retry``, until then);
* withdrawn IDs (erasure) that the audience no longer holds: their removal was applied.

Each kind is one statement per table, bounded by ``RETENTION_BATCH`` rows so that a first purge of a large
backlog does not hold long locks; the job repeats a kind until a round removes less than a batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from services.reconcile.stream_metrics import StreamMetrics
from shared.db import acquire
from shared.logging import get_logger
from shared.retry import is_transient
from shared.runs.purge import affected, purge_finished_runs, purge_staging

log = get_logger(__name__)

RETENTION_BATCH = 50_000

_UNMATCHED = """
DELETE FROM unmatched_id WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM unmatched_id WHERE last_seen < now() - make_interval(days => $1) LIMIT $2))
"""

_PENDING_LINKS = "DELETE FROM visitor_link_pending WHERE seen_at < now() - make_interval(days => $1)"

_WITHDRAWN = """
DELETE FROM withdrawn_id w
 WHERE NOT EXISTS (SELECT 1 FROM exported_member e WHERE e.audience_id = w.audience_id AND e.id = w.id)
"""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    unmatched_days: int
    run_days: int
    staging_hours: int


async def _purge_unmatched(conn: Any, days: int) -> int:
    total = 0
    while True:
        n = affected(await conn.execute(_UNMATCHED, days, RETENTION_BATCH))
        total += n
        if n < RETENTION_BATCH:
            return total


async def purge(conn: Any, policy: RetentionPolicy) -> dict[str, int]:
    """One round of every kind; returns what went, by kind."""
    counts = {
        "unmatched_ids": await _purge_unmatched(conn, policy.unmatched_days),
        "pending_links": affected(await conn.execute(_PENDING_LINKS, policy.unmatched_days)),
        "runs": await purge_finished_runs(conn, policy.run_days, RETENTION_BATCH),
        "staging": await purge_staging(conn, policy.staging_hours),
        "withdrawn_ids": affected(await conn.execute(_WITHDRAWN)),
    }
    if any(counts.values()):
        log.info("retention_purged", **counts)
    return counts


async def purge_periodically(pool: Any, policy: RetentionPolicy, interval_s: float, metrics: StreamMetrics) -> None:
    """reconcile's retention loop: a round at start, then every ``interval_s``."""
    while True:
        try:
            async with acquire(pool) as conn:
                metrics.purged(await purge(conn, policy))
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("retention_retry_later", error=type(exc).__name__)
        await asyncio.sleep(interval_s)
