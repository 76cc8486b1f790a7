"""The asyncpg pool. Connection failures at start become TransientError, so the service can retry.

Every connection is taken from the pool through :func:`acquire`, bounded by ``DB_ACQUIRE_TIMEOUT_S``: a pool
whose connections are all stuck (Postgres hanging, a leak) turns into a retried dependency failure instead of
a batch that waits for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from shared.errors import TransientError
from shared.settings import DatabaseSettings

Pool = asyncpg.Pool

# A pool not made by create_pool (a test's, the CLI's) waits this long: DB_ACQUIRE_TIMEOUT_S's default.
DEFAULT_ACQUIRE_TIMEOUT_S = float(DatabaseSettings.model_fields["db_acquire_timeout_s"].default)


class BoundedPool(asyncpg.Pool):
    """An asyncpg pool that knows how long :func:`acquire` may wait for one of its connections."""

    acquire_timeout_s: float = DEFAULT_ACQUIRE_TIMEOUT_S

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext[Any]:
        # pool.fetch(), pool.execute(), pool.copy_*() take their connection through here: bounded as well.
        return super().acquire(timeout=self.acquire_timeout_s if timeout is None else timeout)


class PoolExhausted(TransientError):
    """No pooled connection came free within DB_ACQUIRE_TIMEOUT_S."""


@asynccontextmanager
async def acquire(pool: Pool, timeout_s: float | None = None) -> AsyncIterator[PoolConnectionProxy[Any]]:
    """A connection of ``pool``, waited for at most ``timeout_s`` (default: the pool's DB_ACQUIRE_TIMEOUT_S)."""
    bound = timeout_s if timeout_s is not None else getattr(pool, "acquire_timeout_s", DEFAULT_ACQUIRE_TIMEOUT_S)
    try:
        conn = await pool.acquire(timeout=bound)
    except TimeoutError as exc:
        raise PoolExhausted(
            "no Postgres connection free in time: raise DB_ACQUIRE_TIMEOUT_S or DB_POOL_MAX_SIZE if Postgres is fine",
            timeout_s=bound,
            dependency="postgres",
        ) from exc
    try:
        yield conn
    finally:
        await pool.release(conn)


async def create_pool(
    settings: DatabaseSettings,
    *,
    application_name: str,
    timeout_s: float = 10.0,
    server_settings: dict[str, str] | None = None,
) -> Pool:
    """``server_settings``: Postgres settings of every connection, on top of its application name."""
    try:
        # asyncpg.create_pool's own construction, of the subclass that carries the acquire bound.
        bounded = BoundedPool(
            settings.database_url.get_secret_value(),
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            max_queries=50000,
            max_inactive_connection_lifetime=300.0,
            loop=None,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            command_timeout=settings.db_command_timeout_s,
            server_settings={**(server_settings or {}), "application_name": application_name},
        )
        bounded.acquire_timeout_s = settings.db_acquire_timeout_s
        pool = await asyncio.wait_for(bounded, timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The DSN may hold a password: say which kind of failure, never the DSN.
        raise TransientError("Postgres unavailable", error=type(exc).__name__) from exc
    assert pool is not None
    return pool


async def check(pool: Pool, timeout_s: float = 3.0) -> bool:
    """True when Postgres answers a trivial query."""
    try:
        async with asyncio.timeout(timeout_s):
            return bool(await pool.fetchval("SELECT 1") == 1)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
