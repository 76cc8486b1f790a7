"""The mass-removal guard of exports: a ``mirror`` or ``full`` run that would take most of a shared audience
away is held ``blocked`` before anything is emitted, until an operator releases it.

A list emptied by mistake (a targeting query gone wrong, a table truncated) would otherwise be mirrored to the
platform at once, and the audience would lose its members everywhere it is activated. The numbers are
counted set-wise inside the run's own diff snapshot, so the decision and the batches agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Connection = Any  # asyncpg.Connection, or a pool's proxy of one


@dataclass(frozen=True, slots=True)
class ExportGuards:
    """``EXPORT_MAX_REMOVAL_SHARE`` and ``EXPORT_GUARD_MIN_SIZE``."""

    max_removal_share: float = 0.5
    min_size: int = 100


@dataclass(frozen=True, slots=True)
class RemovalPlan:
    """How many IDs the audience holds (as the bridge shared them) and how many the run would remove."""

    shared: int
    removing: int

    @property
    def share(self) -> float:
        return self.removing / self.shared if self.shared else 0.0

    def counts(self) -> dict[str, int]:
        return {"shared": self.shared, "to_remove": self.removing}


def guarded(mode: str) -> bool:
    """Only modes that remove are guarded (``append`` never takes anything away)."""
    return mode in ("mirror", "full")


def held_reason(plan: RemovalPlan, guards: ExportGuards) -> str | None:
    """Why the run is held back (None: it may go). An audience below the minimum size is not protected:
    small test audiences change wholesale all the time."""
    if plan.shared < guards.min_size or plan.share <= guards.max_removal_share:
        return None
    return (
        f"would remove {plan.removing} of the {plan.shared} IDs shared with this audience ({plan.share:.0%}), "
        f"more than EXPORT_MAX_REMOVAL_SHARE ({guards.max_removal_share:.0%}): held until an operator runs "
        "audience-bridge release RUN"
    )


async def removal_plan(
    conn: Connection, current_ids: str, list_id: int, audience_id: str, *, min_size: int = 0
) -> RemovalPlan:
    """The audience's size and the IDs the run would remove, counted in the caller's snapshot.

    ``current_ids`` is the run's one-column ID query (the list id as $1). The removal anti-join is read
    only when the audience is large enough (``min_size``) to be guarded at all."""
    shared = int(await conn.fetchval("SELECT count(*) FROM exported_member WHERE audience_id = $1", audience_id))
    if shared == 0 or shared < min_size:
        return RemovalPlan(shared, 0)
    removing = await conn.fetchval(
        "SELECT count(*) FROM exported_member e WHERE e.audience_id = $2 "  # noqa: S608 - a whitelisted query
        f"AND NOT EXISTS (SELECT 1 FROM ({current_ids}) c WHERE c.id = e.id)",
        list_id,
        audience_id,
    )
    return RemovalPlan(shared, int(removing))
