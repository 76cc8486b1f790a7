"""A shared audience belongs to the list it was created for.

An export request naming an existing audience with another list would, in ``mirror`` or ``full`` mode,
replace the audience's members with another population: almost always a mistake in a workflow (a copied
activity, a renamed list). Such a request is refused (the run ``failed``, with the reason) unless an
operator moved the audience to the new list explicitly: :func:`rebind` (``audience-bridge audience rebind
AUDIENCE --list L``), recorded in ``audience_rebind``. What the bridge shared stays in ``exported_member``:
the next ``mirror`` from the new list removes what the new list lacks (and the mass-removal guard
applies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.reconcile.export_locks import lock_audience
from shared.errors import PermanentError
from shared.logging import get_logger
from shared.runs.states import LIVE_STATES

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection, or a pool's proxy of one


class RebindRefused(PermanentError):
    """The audience or the list is unknown or ambiguous, or a run of the audience is under way."""


@dataclass(frozen=True, slots=True)
class Binding:
    audience_id: str
    audience_name: str
    list_id: int | None
    list_name: str | None


@dataclass(frozen=True, slots=True)
class Rebound:
    audience_id: str
    audience_name: str
    from_list: str | None
    to_list: str
    to_list_id: int


async def binding_of(conn: Connection, audience_id: str) -> Binding | None:
    """The export audience's list (None: the audience does not exist yet)."""
    row = await conn.fetchrow(
        """SELECT sa.audience_id, sa.name, sa.list_id, l.name AS list_name
             FROM shared_audience sa LEFT JOIN list l USING (list_id)
            WHERE sa.audience_id = $1 AND sa.direction = 'export'""",
        audience_id,
    )
    return None if row is None else Binding(row["audience_id"], row["name"], row["list_id"], row["list_name"])


def refusal(binding: Binding | None, list_id: int, list_name: str) -> str | None:
    """Why a request naming the audience with ``list_id`` is refused (None: it is the audience's list, or the
    audience is new or bound to no list)."""
    if binding is None or binding.list_id is None or binding.list_id == list_id:
        return None
    return (
        f"the shared audience {binding.audience_name!r} belongs to list {binding.list_name!r} "
        f"(id {binding.list_id}), not {list_name!r} (id {list_id}): an operator moves it with "
        f"audience-bridge audience rebind {binding.audience_id} --list <list>"
    )


async def _find_audience(conn: Connection, ref: str, data_source: str | None) -> Binding:
    rows = await conn.fetch(
        """SELECT sa.audience_id, sa.name, sa.list_id, l.name AS list_name
             FROM shared_audience sa JOIN data_source ds USING (data_source_id) LEFT JOIN list l USING (list_id)
            WHERE sa.direction = 'export' AND (sa.audience_id = $1 OR sa.name = $1)
              AND ($2::text IS NULL OR ds.name = $2)""",
        ref,
        data_source,
    )
    if not rows:
        raise RebindRefused("no export audience with this id or name", audience=ref, data_source=data_source)
    if len(rows) > 1:
        raise RebindRefused(
            "several export audiences have this name: give the audience id or --data-source",
            audience=ref,
            candidates=sorted(r["audience_id"] for r in rows),
        )
    row = rows[0]
    return Binding(row["audience_id"], row["name"], row["list_id"], row["list_name"])


async def _find_list(conn: Connection, ref: str) -> tuple[int, str]:
    # CASE, not AND: SQL does not order an AND, and a generic plan (a statement's 6th run) cast any name.
    row = await conn.fetchrow(
        "SELECT list_id, name FROM list WHERE name = $1"
        " OR list_id = CASE WHEN $1 ~ '^[0-9]{1,18}$' THEN $1::bigint END",
        ref,
    )
    if row is None:
        raise RebindRefused("unknown list", list=ref)
    return int(row["list_id"]), str(row["name"])


async def rebind(
    conn: Connection, audience_ref: str, list_ref: str, *, rebound_by: str, data_source: str | None = None
) -> Rebound:
    """Bind an export audience to another list, on an operator's word (recorded in ``audience_rebind``).
    Refused while a run of the audience is under way: it was diffed against the old list."""
    async with conn.transaction():
        audience = await _find_audience(conn, audience_ref, data_source)
        await lock_audience(conn, audience.audience_id)
        list_id, list_name = await _find_list(conn, list_ref)
        live = await conn.fetchval(
            """SELECT run_id FROM run WHERE direction = 'export' AND audience_id = $1 AND state = ANY($2::text[])
                LIMIT 1""",
            audience.audience_id,
            sorted(LIVE_STATES),
        )
        if live is not None:
            raise RebindRefused(
                "a run of this audience is under way: wait for it to end, or cancel it",
                audience_id=audience.audience_id,
                run_id=str(live),
            )
        await conn.execute(
            "UPDATE shared_audience SET list_id = $2, updated_at = now() WHERE audience_id = $1",
            audience.audience_id,
            list_id,
        )
        await conn.execute(
            """INSERT INTO audience_rebind (audience_id, from_list_id, to_list_id, rebound_by)
               VALUES ($1, $2, $3, $4)""",
            audience.audience_id,
            audience.list_id,
            list_id,
            rebound_by,
        )
    log.info(
        "export_audience_rebound",
        audience_id=audience.audience_id,
        from_list_id=audience.list_id,
        to_list_id=list_id,
        rebound_by=rebound_by,
    )
    return Rebound(audience.audience_id, audience.audience_name, audience.list_name, list_name, list_id)
