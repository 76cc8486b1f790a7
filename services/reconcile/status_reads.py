"""How the status page and API read Postgres without taking anything from imports and exports.

* Their own small pool (``STATUS_PAGE_POOL_SIZE`` connections, read-only sessions with a statement timeout),
  acquired with a timeout: viewers wait for each other, never for the service's pool, and a slow read ends
  in a 503 instead of holding a connection.
* One read for everyone: a snapshot is shared for ``STATUS_PAGE_CACHE_S`` and concurrent viewers wait for the
  read under way instead of starting their own (single flight).
* One rendering for everyone: the page's HTML and JSON are rendered once per snapshot (:class:`RenderMemo`).
* List sizes are counted at most once per ``STATUS_PAGE_LIST_SIZES_REFRESH_S`` (a count of a million members
  is the one expensive part of the page); between counts the page shows the last ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Final

import asyncpg

from services.reconcile.status_queries import Connection, StatusSnapshot, read_snapshot
from shared.errors import TransientError
from shared.logging import get_logger
from shared.settings import DatabaseSettings
from shared.shared_read import SharedRead

log = get_logger(__name__)

PAGE_APPLICATION_NAME: Final = "audience-bridge-reconcile-page"

_LIST_SIZES = """
SELECT lm.list_id, count(*) AS size
  FROM list_member lm
 WHERE lm.list_id IN (SELECT sa.list_id FROM shared_audience sa WHERE sa.list_id IS NOT NULL)
 GROUP BY lm.list_id"""


class PageUnavailable(Exception):
    """The page's pool is not there yet (the service is starting)."""


async def create_page_pool(
    settings: DatabaseSettings, *, size: int, statement_timeout_s: float, connect_timeout_s: float = 10.0
) -> asyncpg.Pool:
    """The page's pool: read-only sessions whose statements Postgres ends after ``statement_timeout_s``."""
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                settings.database_url.get_secret_value(),
                min_size=0,
                max_size=size,
                command_timeout=statement_timeout_s + 1,
                server_settings={
                    "application_name": PAGE_APPLICATION_NAME,
                    "statement_timeout": str(int(statement_timeout_s * 1000)),
                    "default_transaction_read_only": "on",
                },
            ),
            connect_timeout_s,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise TransientError("Postgres unavailable for the status page", error=type(exc).__name__) from exc
    assert pool is not None
    return pool


class PageReads:
    """The page's reads: a connection from its own pool, and the shared, cached snapshot."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool | None],
        *,
        acquire_timeout_s: float,
        cache_s: float,
        list_sizes_refresh_s: float,
    ) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_s
        self._list_sizes_refresh_s = list_sizes_refresh_s
        self._snapshot = SharedRead(self._read, ttl_s=cache_s, name="status-page-read")
        self._list_sizes: tuple[float, Mapping[int, int]] | None = None
        self.list_counts = 0

    @property
    def reads(self) -> int:
        """Snapshots read from Postgres (tests: many viewers, few reads)."""
        return self._snapshot.reads

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection of the page's pool; TimeoutError when all are busy for the acquire timeout."""
        pool = self._pool()
        if pool is None:
            raise PageUnavailable
        async with pool.acquire(timeout=self._acquire_timeout_s) as conn:
            yield conn

    async def snapshot(self) -> StatusSnapshot:
        return await self._snapshot.get()

    async def _read(self) -> StatusSnapshot:
        async with self.connection() as conn:
            snapshot = await read_snapshot(conn)
            sizes = await self._sizes(conn)
        audiences = [
            dataclasses.replace(a, list_size=sizes.get(a.list_id, 0) if a.list_id is not None else 0)
            for a in snapshot.audiences
        ]
        return dataclasses.replace(snapshot, audiences=audiences)

    async def _sizes(self, conn: Connection) -> Mapping[int, int]:
        cached = self._list_sizes
        if cached is not None and time.monotonic() - cached[0] < self._list_sizes_refresh_s:
            return cached[1]
        try:
            rows = await conn.fetch(_LIST_SIZES)
        except asyncpg.QueryCanceledError:
            # The statement timeout: show the last sizes (none yet: 0) rather than no page; count again later.
            log.warning("status_page_list_sizes_timed_out")
            rows = None
        previous = cached[1] if cached is not None else {}
        sizes = previous if rows is None else {int(r["list_id"]): int(r["size"]) for r in rows}
        self.list_counts += 1
        self._list_sizes = (time.monotonic(), sizes)
        return sizes


class RenderMemo:
    """The last rendering and what it was rendered from: a snapshot shared by many viewers is rendered once
    (rendering the page is CPU on the event loop that also applies the imports)."""

    def __init__(self) -> None:
        self._inputs: tuple[object, ...] = ()
        self._output = b""
        self.renders = 0

    def get(self, inputs: tuple[object, ...], render: Callable[[], bytes]) -> bytes:
        same = len(inputs) == len(self._inputs) and all(a is b for a, b in zip(inputs, self._inputs, strict=True))
        if not same or not self._inputs:
            self._output, self._inputs = render(), inputs
            self.renders += 1
        return self._output
