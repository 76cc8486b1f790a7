"""The export run as publish sees it: the run reconcile recorded, with its audience and data source.

Publish works on a run by itself while it is live (``started``, ``progress``: its batches arriving, its
files being written; ``uploaded``: the platform's receipts awaited). Once ended it leaves it alone: a
``succeeded`` or ``partial`` run is done; a ``failed`` one waits for ``audience-bridge retry`` (or the next
request's run); a ``blocked`` one was stopped by reconcile before any batch was emitted. Publish itself
only ends runs as ``succeeded``, ``partial`` or ``failed`` (:data:`PUBLISH_ENDS`): those are the states it
announces and counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from shared.errors import PermanentError
from shared.messages import AudienceExportBatch, ExportMode
from shared.runs.outcome import RunOutcome, int_map
from shared.runs.states import LIVE_STATES, RunState

Connection = Any  # asyncpg.Connection or a pool's proxy of one

# ``blocked`` is reconcile's end (a PII data source, decided before any batch) and ``cancelled`` an
# operator's: publish neither announces them again nor counts them, or the run would be counted twice.
PUBLISH_ENDS: Final[frozenset[RunState]] = frozenset({"succeeded", "partial", "failed"})


class BatchRefused(PermanentError):
    """The batch cannot be published as sent (unknown run or audience, inconsistent with its run)."""


def run_counts(
    totals: Mapping[str, int] | None, recorded: Mapping[str, int], *, added: int, removed: int
) -> dict[str, int]:
    """The counts of a finished export run: ``received`` and ``excluded`` as reconcile counted them (the
    last batch's totals, else the run row's), ``added``/``removed`` as written to the platform."""
    source = {**recorded, **(totals or {})}
    return {
        "received": int(source.get("received", 0)),
        "added": added,
        "removed": removed,
        "excluded": int(source.get("excluded", 0)),
    }


@dataclass(frozen=True, slots=True)
class ExportRun:
    """An export run as reconcile recorded it, with its audience and data source."""

    run_id: uuid.UUID
    audience_id: str
    audience_name: str
    mode: ExportMode
    state: RunState
    reason: str | None
    started_at: datetime
    counts: dict[str, int]
    data_source_id: int
    dpid: int
    trait_id: int | None
    segment_id: int | None
    staged_batches: int
    last_seq: int | None
    totals: dict[str, int] | None
    file_ts: int | None

    @property
    def live(self) -> bool:
        """Publish works on the run by itself (stages, writes, finishes); otherwise only a retry does."""
        return self.state in LIVE_STATES

    @property
    def complete(self) -> bool:
        return self.last_seq is not None and self.staged_batches == self.last_seq + 1

    def outcome(self, files: Sequence[str] = ()) -> RunOutcome:
        """Where the run stands, with the counts publish reports (the IDs it wrote, once it wrote them)."""
        counts = run_counts(
            self.totals, self.counts, added=self.counts.get("added", 0), removed=self.counts.get("removed", 0)
        )
        return RunOutcome(
            self.run_id, "export", self.state, self.audience_id, counts, reason=self.reason, files=tuple(files)
        )

    def started(self) -> RunOutcome:
        """The ``started`` announcement: nothing written yet."""
        counts = run_counts(self.totals, self.counts, added=0, removed=0)
        return RunOutcome(self.run_id, "export", "started", self.audience_id, counts)


_LOAD_RUN: Final = """
SELECT r.run_id, r.direction, r.audience_id, r.mode, r.state, r.reason, r.started_at, r.counts,
       r.data_source_id AS run_data_source_id, r.dpid AS run_dpid,
       sa.audience_id AS sa_audience_id, sa.name AS audience_name, sa.direction AS sa_direction,
       sa.platform_trait_id, sa.platform_segment_id,
       ds.data_source_id, ds.dpid,
       (SELECT count(*) FROM published_batch pb WHERE pb.run_id = r.run_id) AS staged_batches,
       pr.last_seq, pr.totals, pr.file_ts
  FROM run r
  LEFT JOIN shared_audience sa ON sa.audience_id = r.audience_id
  LEFT JOIN data_source ds ON ds.data_source_id = coalesce(r.data_source_id, sa.data_source_id)
  LEFT JOIN publish_run pr ON pr.run_id = r.run_id
 WHERE r.run_id = $1
"""


async def load_run(conn: Connection | asyncpg.Pool, run_id: uuid.UUID) -> ExportRun | None:
    """The export run, or None when no run row exists. Raises :class:`BatchRefused` when the row exists
    but is not an export run publish can serve (wrong direction, no export audience or data source)."""
    row = await conn.fetchrow(_LOAD_RUN, run_id)
    if row is None:
        return None
    if row["direction"] != "export":
        raise BatchRefused("the run is not an export run", run_id=str(run_id), direction=row["direction"])
    if row["sa_audience_id"] is None or row["sa_direction"] != "export":
        raise BatchRefused("the run's audience is not an export audience", audience_id=row["audience_id"])
    if row["data_source_id"] is None:
        raise BatchRefused("the run's data source is unknown", audience_id=row["audience_id"])
    if row["run_dpid"] is not None and row["run_dpid"] != row["dpid"]:
        raise BatchRefused("the run's DPID differs from its data source's", run_dpid=row["run_dpid"], dpid=row["dpid"])
    if row["mode"] not in ("append", "mirror", "full"):
        raise BatchRefused("the run's mode is not an export mode", mode=row["mode"])
    return ExportRun(
        run_id=row["run_id"],
        audience_id=row["audience_id"],
        audience_name=row["audience_name"],
        mode=row["mode"],
        state=row["state"],
        reason=row["reason"],
        started_at=row["started_at"],
        counts=int_map(row["counts"]),
        data_source_id=row["data_source_id"],
        dpid=row["dpid"],
        trait_id=row["platform_trait_id"],
        segment_id=row["platform_segment_id"],
        staged_batches=row["staged_batches"],
        last_seq=row["last_seq"],
        totals=int_map(row["totals"]) if row["totals"] is not None else None,
        file_ts=row["file_ts"],
    )


def check_batch(run: ExportRun, batch: AudienceExportBatch) -> None:
    """A batch must agree with the run reconcile recorded; anything else is a bug upstream, not a retry."""
    if batch.audience_id != run.audience_id:
        raise BatchRefused("the batch's audience differs from its run's", batch=batch.audience_id, run=run.audience_id)
    if batch.dpid != run.dpid:
        raise BatchRefused("the batch's DPID differs from its data source's", batch=batch.dpid, run=run.dpid)
    if batch.mode != run.mode:
        raise BatchRefused("the batch's mode differs from its run's", batch=batch.mode, run=run.mode)
    if run.last_seq is not None and batch.seq > run.last_seq:
        raise BatchRefused("the batch comes after its run's last batch", seq=batch.seq, last_seq=run.last_seq)
