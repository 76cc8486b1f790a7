"""A file set's rows, read in a fixed order from Postgres and handed out part by part (for
:mod:`services.publish.files`, which writes the parts): the plan and row queries of ``.sync`` and ``.overwrite``
sets, and the server-side cursor that prefetches the next block while the current one is encoded."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from services.publish.encoding import (
    OTHER_TRAIT_FIXED_BYTES,
    overwrite_block,
    overwrite_overhead,
    sync_block,
    sync_overhead,
)
from services.publish.export_run import ExportRun
from services.publish.parts import FileSet
from services.publish.stage import staged_ids
from shared.errors import PermanentError

FETCH_ROWS: Final = 20_000  # rows per cursor round trip: a few MB of lines at most

Record = Any  # asyncpg.Record


class PlanChanged(PermanentError):
    """The rows ended before the plan's line count: cannot happen within one snapshot."""


# .sync sets read the staged batches in order, each batch's adds then its removes: the same order on
# every attempt, so a part holds the same lines whenever it is written. The plan adds up the batches'
# sizes and takes their longest ID; nothing is unnested, sorted or de-duplicated (reconcile's diff
# already is distinct).
_SYNC_ARRAYS: Final = {"changes": (True, True), "adds": (True, False), "removes": (False, True)}
_SYNC_PLAN: Final = {
    "changes": "SELECT coalesce(sum(adds_n + removes_n), 0) AS n, "
    "coalesce(max(max_id_bytes), 0) AS variable FROM publish_stage_batch WHERE run_id = $1",
    "adds": "SELECT coalesce(sum(adds_n), 0) AS n, "
    "coalesce(max(max_id_bytes), 0) AS variable FROM publish_stage_batch WHERE run_id = $1",
    "removes": "SELECT coalesce(sum(removes_n), 0) AS n, "
    "coalesce(max(max_id_bytes), 0) AS variable FROM publish_stage_batch WHERE run_id = $1",
}
_SYNC_ROWS: Final = "SELECT adds, removes, adds_n, removes_n FROM publish_stage_batch WHERE run_id = $1 ORDER BY seq"

# Rows of an .overwrite set: (id, the traits of the data source's other export audiences holding it).
# Set-wise: the run's adds joined once with what the bridge exported to the same users through those
# audiences (exported_member), never a query per user.
_OVERWRITE_WITH = """
WITH adds AS (SELECT DISTINCT a.id COLLATE "C" AS id
                FROM publish_stage_batch b, string_to_table(b.adds, E'\\n') AS a(id)
               WHERE b.run_id = $1 AND b.adds_n > 0),
others AS (
    SELECT em.id, array_agg(DISTINCT sa.platform_trait_id ORDER BY sa.platform_trait_id) AS traits,
           sum($5::int + length(sa.platform_trait_id::text)) AS extra_bytes
      FROM exported_member em
      JOIN shared_audience sa ON sa.audience_id = em.audience_id
     WHERE sa.direction = 'export' AND sa.data_source_id = $2 AND sa.audience_id <> $3
       AND sa.platform_trait_id IS NOT NULL AND sa.platform_trait_id <> $4
       AND em.id IN (SELECT id FROM adds)
     GROUP BY em.id)
"""
_OVERWRITE_ROWS: Final = (
    _OVERWRITE_WITH + "SELECT a.id, o.traits AS others FROM adds a LEFT JOIN others o USING (id) ORDER BY a.id"  # noqa: S608
)
_OVERWRITE_PLAN: Final = (
    _OVERWRITE_WITH
    + "SELECT count(*) AS n, coalesce(max(octet_length(a.id) + coalesce(o.extra_bytes, 0)), 0) AS variable "
    "FROM adds a LEFT JOIN others o USING (id)"
)
STAGED_BATCHES_PER_FETCH: Final = 4  # staged batches per cursor round trip: a few MB of IDs at most


@dataclass(frozen=True, slots=True)
class _Block:
    """Consecutive rows of a file set, and how to render any slice of them as lines."""

    rows: Sequence[Any]
    render: Callable[[Sequence[Any]], bytes]


class SetRows:
    """A file set's rows in their fixed order, handed out part by part from a server-side cursor.

    The next fetch is in flight while the current block is formatted and compressed (in a worker
    thread), so a part costs about the longer of the two, not their sum."""

    def __init__(self, cursor: Any, fetch: Callable[[Any], Awaitable[tuple[list[_Block], bool]]]) -> None:
        self._cursor = cursor
        self._fetch = fetch
        self._blocks: collections.deque[_Block] = collections.deque()
        self._pending: asyncio.Future[tuple[list[_Block], bool]] | None = None
        self._done = False

    def _prefetch(self) -> None:
        if self._pending is None and not self._done:
            self._pending = asyncio.ensure_future(self._fetch(self._cursor))

    async def _next_block(self) -> _Block | None:
        while not self._blocks:
            if self._done and self._pending is None:
                return None
            self._prefetch()
            assert self._pending is not None
            pending, self._pending = self._pending, None
            blocks, self._done = await pending
            self._blocks.extend(blocks)
        block = self._blocks.popleft()
        if not self._blocks:
            self._prefetch()
        return block

    async def take(self, lines: int, part: str) -> AsyncGenerator[_Block, None]:
        """The next ``lines`` rows, in blocks."""
        remaining = lines
        while remaining > 0:
            block = await self._next_block()
            if block is None:
                raise PlanChanged("the run's rows ended before the planned part did", part=part)
            if len(block.rows) > remaining:
                self._blocks.appendleft(_Block(block.rows[remaining:], block.render))
                block = _Block(block.rows[:remaining], block.render)
            remaining -= len(block.rows)
            yield block

    async def skip(self, lines: int, part: str) -> None:
        async for _ in self.take(lines, part):
            pass

    async def close(self) -> None:
        """The connection must be idle again before its transaction ends: settle the fetch in flight."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if not pending.done():
            pending.cancel()
        await asyncio.wait([pending])  # never raises the fetch's error; our own cancellation still does
        if not pending.cancelled():
            pending.exception()  # retrieved: a failed prefetch is moot once the set is abandoned


@dataclass(frozen=True, slots=True)
class SetQuery:
    """How to plan and read one file set's rows."""

    plan: str
    plan_args: tuple[Any, ...]
    rows: str
    rows_args: tuple[Any, ...]
    overhead: int  # bytes of every line besides the plan's ``variable`` (the id, other audiences' traits)
    fetch: Callable[[Any], Awaitable[tuple[list[_Block], bool]]]  # cursor -> (blocks, no more rows)


def set_query(fs: FileSet, run: ExportRun, trait: int) -> SetQuery:
    if fs.mode == "overwrite":
        overwrite_args = (run.run_id, run.data_source_id, run.audience_id, trait, OTHER_TRAIT_FIXED_BYTES)

        def render_overwrite(rows: Sequence[Record]) -> bytes:
            return overwrite_block(((r["id"], r["others"]) for r in rows), trait)

        async def fetch_overwrite(cursor: Any) -> tuple[list[_Block], bool]:
            rows = await cursor.fetch(FETCH_ROWS)
            return ([_Block(rows, render_overwrite)] if rows else []), len(rows) < FETCH_ROWS

        return SetQuery(
            plan=_OVERWRITE_PLAN,
            plan_args=overwrite_args,
            rows=_OVERWRITE_ROWS,
            rows_args=overwrite_args,
            overhead=overwrite_overhead(trait),
            fetch=fetch_overwrite,
        )
    with_adds, with_removes = _SYNC_ARRAYS[fs.rows]

    def render_adds(ids: Sequence[str]) -> bytes:
        return sync_block(ids, trait, is_add=True)

    def render_removes(ids: Sequence[str]) -> bytes:
        return sync_block(ids, trait, is_add=False)

    async def fetch_sync(cursor: Any) -> tuple[list[_Block], bool]:
        rows = await cursor.fetch(STAGED_BATCHES_PER_FETCH)
        blocks = []
        for row in rows:
            if with_adds and row["adds_n"]:
                blocks.append(_Block(staged_ids(row["adds"], row["adds_n"]), render_adds))
            if with_removes and row["removes_n"]:
                blocks.append(_Block(staged_ids(row["removes"], row["removes_n"]), render_removes))
        return blocks, len(rows) < STAGED_BATCHES_PER_FETCH

    return SetQuery(
        plan=_SYNC_PLAN[fs.rows],
        plan_args=(run.run_id,),
        rows=_SYNC_ROWS,
        rows_args=(run.run_id,),
        # A bound: a set holding removes is planned as if every line were one (d_unsid= is the longer).
        overhead=sync_overhead(trait, fs.rows == "adds"),
        fetch=fetch_sync,
    )
