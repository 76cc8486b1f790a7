"""A dry run of an export request: the run as it would be, computed and changing nothing.

``audience-bridge export … --dry-run`` and ``POST /api/exports/dry-run``. Everything is read inside one
READ ONLY, REPEATABLE READ transaction with the very queries the exporter runs
(:mod:`services.reconcile.export_diff`, :mod:`services.reconcile.export_guard`): the IDs the run would add
and remove, the recipients it would leave out for lack of an ID or for their consent, the guard's verdict, and
a sample of each. No request, run, cursor or ledger row is written (Postgres itself refuses a write in a
read-only transaction), nothing is published: a real run afterwards is what it would have been without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from services.reconcile import export_authorisation as authorisation
from services.reconcile import export_waiting as waiting
from services.reconcile.export_binding import binding_of, refusal
from services.reconcile.export_diff import (
    CURRENT_IDS,
    EXCLUDED,
    OPTED_OUT,
    export_audience_id,
    list_id_of,
    load_source,
)
from services.reconcile.export_diff import (
    diff_sql as diff_queries,
)
from services.reconcile.export_guard import ExportGuards, RemovalPlan, guarded, held_reason
from shared.errors import PermanentError
from shared.messages import AudienceExportRequest
from shared.platform.models import PII

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

# What the real run would do: go ahead, wait for an earlier run of its audience, be held by the mass-removal
# guard, be refused (another list's audience, not declared) or blocked (the data source forbids it).
# The recipients OPTED_OUT counts (consent: never exported), for the sample.
_OPTED_OUT_RECIPIENTS = (
    "SELECT lm.recipient_id FROM list_member lm JOIN recipient r USING (recipient_id) "
    "WHERE lm.list_id = $1 AND r.opted_out"
)
Verdict = Literal["would_run", "would_wait", "would_be_held", "would_be_refused", "would_be_blocked"]


@dataclass(frozen=True, slots=True)
class DryRun:
    audience_id: str
    list_id: int
    mode: str
    verdict: Verdict
    reason: str | None = None
    received: int = 0
    to_add: int = 0
    to_remove: int = 0
    excluded: int = 0
    opted_out: int = 0
    shared: int = 0  # IDs the audience holds from the bridge now
    samples: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "received": self.received,
            "to_add": self.to_add,
            "to_remove": self.to_remove,
            "excluded": self.excluded,
            "opted_out": self.opted_out,
            "shared": self.shared,
        }


@dataclass(frozen=True, slots=True)
class _Base:
    audience_id: str
    list_id: int
    mode: str

    def stopped(self, verdict: Verdict, reason: str) -> DryRun:
        """A request that would not get as far as a diff."""
        return DryRun(self.audience_id, self.list_id, self.mode, verdict, reason)


async def dry_run(
    conn: Connection,
    request: AudienceExportRequest,
    guards: ExportGuards,
    *,
    sample: int = 10,
    allow_undeclared: bool = False,
    work_mem_mb: int = 256,
) -> DryRun:
    """The run the request would make now, in one read-only snapshot (``work_mem_mb``: EXPORT_WORK_MEM_MB, as
    the run's own diff: the anti-joins hash in memory)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SELECT set_config('work_mem', $1, true)", f"{int(work_mem_mb)}MB")
        list_id = await list_id_of(conn, request.list_id)
        source = await load_source(conn, request.data_source)
        audience_id = export_audience_id(source.name, request.audience_name)
        base = _Base(audience_id, list_id, request.mode)
        if PII in source.export_controls:
            blocked = f"data source {source.name!r} carries the PII export restriction"
            return base.stopped("would_be_blocked", blocked)
        if source.kind not in CURRENT_IDS:
            raise PermanentError("data source has an unsupported reconciliation key", data_source=source.name)
        declared = await authorisation.declaration_of(conn, source.data_source_id, request.audience_name)
        why = authorisation.refusal(declared, request, list_id, allow_undeclared=allow_undeclared)
        why = why or refusal(await binding_of(conn, audience_id), list_id, request.list_id)
        if why is not None:
            return base.stopped("would_be_refused", why)
        current = CURRENT_IDS[source.kind]
        received = int(await conn.fetchval("SELECT count(*) FROM list_member WHERE list_id = $1", list_id))
        excluded, excluded_sample = await _counted(conn, EXCLUDED[source.kind], sample, list_id)
        opted_out = int(await conn.fetchval(OPTED_OUT, list_id))
        _, opted_out_sample = await _counted(conn, _OPTED_OUT_RECIPIENTS, sample, list_id) if opted_out else (0, [])
        found: dict[bool, tuple[int, list[str]]] = {True: (0, []), False: (0, [])}
        for query in diff_queries(current, request.mode):
            args = (list_id, audience_id) if query.by_audience else (list_id,)
            found[query.is_add] = await _counted(conn, query.sql, sample, *args)
        # The guard's numbers are the diff's: what the audience holds, and the removals counted just now.
        shared = int(await conn.fetchval("SELECT count(*) FROM exported_member WHERE audience_id = $1", audience_id))
        plan = RemovalPlan(shared, found[False][0])
        verdict: Verdict = "would_run"
        reason: str | None = held_reason(plan, guards) if guarded(request.mode) else None
        if reason is not None:
            verdict = "would_be_held"
        elif (ahead := await waiting.ahead_of(conn, audience_id, request.request_id, None)) is not None:
            verdict, reason = "would_wait", f"waits for {ahead} of this audience to end"
    return DryRun(
        audience_id=audience_id,
        list_id=list_id,
        mode=request.mode,
        verdict=verdict,
        reason=reason,
        received=received,
        to_add=found[True][0],
        to_remove=found[False][0],
        excluded=excluded,
        opted_out=opted_out,
        shared=plan.shared,
        samples={
            "to_add": found[True][1],
            "to_remove": found[False][1],
            "excluded": excluded_sample,
            "opted_out": opted_out_sample,
        },
    )


async def _counted(conn: Connection, query: str, sample: int, *args: Any) -> tuple[int, list[str]]:
    """How many rows a one-column query returns, and the first ``sample`` of them in value order (the same every
    time), from one evaluation of the query: it is the costly part, as in the run itself."""
    row = await conn.fetchrow(
        f"WITH q(v) AS MATERIALIZED ({query}) "  # noqa: S608 - a whitelisted query
        "SELECT (SELECT count(*) FROM q) AS total, "
        f"ARRAY(SELECT v::text FROM q ORDER BY v LIMIT {int(sample)}) AS shown",
        *args,
    )
    return int(row["total"]), list(row["shown"])
