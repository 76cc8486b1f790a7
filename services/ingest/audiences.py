"""Which import audience a platform segment (or an upstream segment id) feeds, read from Postgres; and every
import audience with its data source's DPID and named destination, to route a delivered file.

Kept in memory and refreshed on a schedule, and at once when an unknown segment shows up (an operator
may just have configured it), at most once per ``min_refresh_s`` so a flood of unknown ids cannot hammer
Postgres.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from shared.ids import IdType


@dataclass(frozen=True, slots=True)
class ImportAudience:
    audience_id: str
    platform_segment_id: int | None
    data_source: str
    id_type: IdType
    dpid: int
    export_controls: tuple[str, ...]
    # Only files delivered by this platform destination feed the audience (None: any destination).
    platform_destination_id: int | None = None


class AudienceDirectory:
    def __init__(self, pool: asyncpg.Pool, *, refresh_s: float = 60.0, min_refresh_s: float = 2.0) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._min_refresh_s = min_refresh_s
        self._by_key: dict[str, list[ImportAudience]] = {}
        self._all: list[ImportAudience] = []
        self._loaded_at = float("-inf")

    async def refresh(self) -> None:
        rows = await self._pool.fetch(
            """SELECT sa.audience_id, sa.platform_segment_id, ds.name AS data_source, ds.id_type, ds.dpid,
                      ds.export_controls, sa.platform_destination_id
                 FROM shared_audience sa JOIN data_source ds USING (data_source_id)
                WHERE sa.direction = 'import'"""
        )
        by_key: dict[str, list[ImportAudience]] = {}
        audiences: list[ImportAudience] = []
        for row in rows:
            audience = ImportAudience(
                audience_id=row["audience_id"],
                platform_segment_id=row["platform_segment_id"],
                data_source=row["data_source"],
                id_type=row["id_type"],
                dpid=row["dpid"],
                export_controls=tuple(row["export_controls"]),
                platform_destination_id=row["platform_destination_id"],
            )
            audiences.append(audience)
            by_key.setdefault(audience.audience_id, []).append(audience)
            # One platform segment may feed several lists (e.g. one per data source or per team).
            if audience.platform_segment_id is not None:
                by_key.setdefault(str(audience.platform_segment_id), []).append(audience)
        self._by_key = by_key
        self._all = audiences
        self._loaded_at = time.monotonic()

    async def lookup(self, segment_or_audience_id: str) -> list[ImportAudience]:
        """The audiences fed by this platform segment id (or the one named by this audience id)."""
        age = time.monotonic() - self._loaded_at
        if age > self._refresh_s:
            await self.refresh()
        found = self._by_key.get(segment_or_audience_id)
        if found is None and age > self._min_refresh_s:
            await self.refresh()
            found = self._by_key.get(segment_or_audience_id)
        return list(found or ())

    async def import_audiences(self) -> list[ImportAudience]:
        """Every import audience (refreshed on the schedule)."""
        if time.monotonic() - self._loaded_at > self._refresh_s:
            await self.refresh()
        return list(self._all)

    async def refresh_soon(self) -> bool:
        """Refresh now unless that was done within ``min_refresh_s``; whether it refreshed. For a delivery that
        no audience takes: an operator may just have configured one."""
        if time.monotonic() - self._loaded_at <= self._min_refresh_s:
            return False
        await self.refresh()
        return True
