"""The asyncpg pool. Connection failures at start become TransientError, so the service can retry."""

from __future__ import annotations

import asyncio

import asyncpg

from shared.errors import TransientError
from shared.settings import DatabaseSettings

Pool = asyncpg.Pool


async def create_pool(
    settings: DatabaseSettings,
    *,
    application_name: str,
    timeout_s: float = 10.0,
    server_settings: dict[str, str] | None = None,
) -> Pool:
    """``server_settings``: Postgres settings of every connection, on top of its application name."""
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                settings.database_url.get_secret_value(),
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                command_timeout=settings.db_command_timeout_s,
                server_settings={**(server_settings or {}), "application_name": application_name},
            ),
            timeout_s,
        )
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
