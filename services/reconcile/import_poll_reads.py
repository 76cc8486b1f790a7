"""Each import audience's polling interval (catalog ``poll_every``) with its last and next poll, as ingest keeps
them (``import_poll``, :mod:`services.ingest.poll_slots`), for the status page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.schedule_slots import Cadence, next_run


@dataclass(frozen=True, slots=True)
class ImportPollRow:
    audience_id: str
    name: str
    data_source: str
    every_s: int
    # None until ingest has seen the interval (its slots are counted from then).
    anchor: datetime | None
    last_slot: datetime | None
    last_polled_at: datetime | None

    @property
    def next_poll(self) -> datetime | None:
        if self.anchor is None:
            return None
        cadence = Cadence(every_s=self.every_s)
        return next_run(cadence, created=self.anchor, anchor=self.anchor, last_slot=self.last_slot)


# A row ingest counts with another interval (the catalog just changed it) shows no slot until ingest's next scan.
_IMPORT_POLLS = """
SELECT sa.audience_id, sa.name, ds.name AS data_source, sa.poll_every_s AS every_s,
       ip.anchor, ip.last_slot, ip.last_polled_at
  FROM shared_audience sa
  JOIN data_source ds USING (data_source_id)
  LEFT JOIN import_poll ip ON ip.audience_id = sa.audience_id AND ip.every_s = sa.poll_every_s
 WHERE sa.direction = 'import' AND sa.poll_every_s IS NOT NULL
 ORDER BY sa.audience_id
"""


async def load_import_polls(conn: asyncpg.Connection[Any] | Any) -> list[ImportPollRow]:
    return [ImportPollRow(**dict(row)) for row in await conn.fetch(_IMPORT_POLLS)]
