"""Audience insights read from Postgres: each audience's size and match rate run by run, and list overlaps.

History comes from the ``run`` table alone (nothing new is recorded): a run that applied (``succeeded`` or
``partial``) changed its audience by ``counts.added - counts.removed``, so the size after each run is today's
size minus the net changes of every later applied run (a window sum, one statement per audience). Today's
size is the bound list's members (an import) or the IDs the bridge shared (an export, ``exported_member``).
Members changed outside runs (recipients deleted, streams) shift the earlier points by that much: the curve
is exact at its last point and at every run's change.

Overlaps are exact counts, set-wise: two lists are merge-joined on their primary keys ``(list_id,
recipient_id)``; a list against an exported audience compares the list's IDs for the audience's data source
(the export's own ID query) with ``exported_member``'s primary key ``(audience_id, id)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from services.reconcile.export_diff import CURRENT_IDS
from shared.errors import PermanentError
from shared.runs.outcome import int_map

Connection = Any  # asyncpg.Connection, or a pool's proxy of one

# States in which a run changed its audience (an export applied in part changed it in part: its counts are
# what publish recorded as applied).
APPLIED_STATES = ("succeeded", "partial")

_AUDIENCES = """
SELECT sa.audience_id, sa.name, sa.direction, sa.list_id, l.name AS list_name
  FROM shared_audience sa LEFT JOIN list l USING (list_id)
 ORDER BY sa.direction, sa.name, sa.audience_id"""

_SIZE_NOW = """
SELECT CASE WHEN sa.direction = 'export'
            THEN (SELECT count(*) FROM exported_member e WHERE e.audience_id = sa.audience_id)
            ELSE (SELECT count(*) FROM list_member lm WHERE lm.list_id = sa.list_id) END
  FROM shared_audience sa WHERE sa.audience_id = $1"""

# Newest first, so the window sums the net changes of the runs after each one (run_audience_idx serves it).
_HISTORY = """
SELECT r.run_id, r.started_at, coalesce(r.finished_at, r.updated_at) AS ended_at, r.id_type, r.counts,
       r.match_rate,
       coalesce(sum(coalesce((r.counts->>'added')::bigint, 0) - coalesce((r.counts->>'removed')::bigint, 0))
                OVER (ORDER BY r.started_at DESC, r.run_id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                0) AS later_net
  FROM run r
 WHERE r.audience_id = $1 AND r.state IN ('succeeded', 'partial')
 ORDER BY r.started_at DESC, r.run_id DESC
 LIMIT $2"""

# CASE, not AND: SQL does not order an AND, and a generic plan (a statement's 6th run) cast any name.
_LIST = "SELECT list_id, name FROM list WHERE name = $1 OR list_id = CASE WHEN $1 ~ '^[0-9]{1,18}$' THEN $1::bigint END"

_LIST_OVERLAP = """
SELECT (SELECT count(*) FROM list_member WHERE list_id = $1) AS a_size,
       (SELECT count(*) FROM list_member WHERE list_id = $2) AS b_size,
       (SELECT count(*) FROM list_member a JOIN list_member b
            ON b.list_id = $2 AND b.recipient_id = a.recipient_id
         WHERE a.list_id = $1) AS both_"""

_EXPORTED_SOURCE = """
SELECT ds.id_type, ds.reconciliation_key, ds.key_transform
  FROM shared_audience sa JOIN data_source ds USING (data_source_id)
 WHERE sa.audience_id = $1 AND sa.direction = 'export'"""


@dataclass(frozen=True, slots=True)
class AudienceRef:
    audience_id: str
    name: str
    direction: str
    list_id: int | None
    list_name: str | None


@dataclass(frozen=True, slots=True)
class RunPoint:
    """One applied run of an audience: when, its counts, match rate per ID type, and the size it left."""

    run_id: str
    started_at: datetime
    ended_at: datetime
    size: int
    added: int
    removed: int
    unmatched: int
    received: int
    match_rate: dict[str, float]


@dataclass(frozen=True, slots=True)
class Overlap:
    """Exact counts of two sets and their intersection (``unit``: recipients, or IDs)."""

    a: str
    b: str
    unit: str
    a_size: int
    b_size: int
    both: int

    @property
    def only_a(self) -> int:
        return self.a_size - self.both

    @property
    def only_b(self) -> int:
        return self.b_size - self.both


class UnknownInsightTarget(PermanentError):
    """An overlap named a list or an exported audience that does not exist."""


async def audiences(conn: Connection) -> list[AudienceRef]:
    return [AudienceRef(**dict(r)) for r in await conn.fetch(_AUDIENCES)]


def _rates(raw: Any) -> dict[str, float]:
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


async def history(conn: Connection, audience_id: str, *, limit: int = 100) -> list[RunPoint]:
    """The audience's last ``limit`` applied runs, oldest first, each with the size it left."""
    size_now = await conn.fetchval(_SIZE_NOW, audience_id)
    if size_now is None:
        return []
    points = []
    for row in await conn.fetch(_HISTORY, audience_id, limit):
        counts = int_map(row["counts"])
        points.append(
            RunPoint(
                run_id=str(row["run_id"]),
                started_at=row["started_at"],
                ended_at=row["ended_at"],
                size=max(0, int(size_now) - int(row["later_net"])),
                added=counts.get("added", 0),
                removed=counts.get("removed", 0),
                unmatched=counts.get("unmatched", 0),
                received=counts.get("received", 0),
                match_rate=_rates(row["match_rate"]),
            )
        )
    points.reverse()
    return points


async def _list(conn: Connection, ref: str) -> tuple[int, str]:
    row = await conn.fetchrow(_LIST, ref)
    if row is None:
        raise UnknownInsightTarget("unknown list", list=ref)
    return int(row["list_id"]), str(row["name"])


async def list_overlap(conn: Connection, a: str, b: str) -> Overlap:
    """Recipients in list ``a``, in list ``b``, and in both."""
    (a_id, a_name), (b_id, b_name) = await _list(conn, a), await _list(conn, b)
    row = await conn.fetchrow(_LIST_OVERLAP, a_id, b_id)
    return Overlap(a_name, b_name, "recipients", int(row["a_size"]), int(row["b_size"]), int(row["both_"]))


async def list_audience_overlap(conn: Connection, list_ref: str, audience_id: str) -> Overlap:
    """The list's IDs for the exported audience's data source (as an export would send them, opted-out
    recipients left out), the IDs the bridge shared with the audience, and the IDs in both."""
    list_id, list_name = await _list(conn, list_ref)
    source = await conn.fetchrow(_EXPORTED_SOURCE, audience_id)
    if source is None:
        raise UnknownInsightTarget("unknown exported audience", audience_id=audience_id)
    ids = CURRENT_IDS[(source["id_type"], source["reconciliation_key"], source["key_transform"])]
    # One pass over the list's IDs, each probed in the audience's primary key.
    row = await conn.fetchrow(
        f"""SELECT count(*) AS a_size, count(e.id) AS both_,
                   (SELECT count(*) FROM exported_member WHERE audience_id = $2) AS b_size
              FROM ({ids}) c LEFT JOIN exported_member e ON e.audience_id = $2 AND e.id = c.id""",  # noqa: S608
        list_id,
        audience_id,
    )
    return Overlap(list_name, audience_id, "IDs", int(row["a_size"]), int(row["b_size"]), int(row["both_"]))
