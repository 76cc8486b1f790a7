"""Postgres faults that are not crashes, for the fault scenario.

* Through toxiproxy (the services' DATABASE_URL points at the proxy; the driver's own pool does not): every
  connection cut for a while (open ones closed, new ones refused), or everything Postgres sends delayed.
* In the database: a test-installed statement trigger on the tables imports and exports write raises a chosen
  SQLSTATE while a row of ``chaos_fault`` says so: 53100 disk full, 53200 out of memory, 57014 query
  cancelled, 25006 read-only transaction, 55P03 lock not available. The driver's own writes set
  ``chaos.driver`` and pass.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.chaos.toxiproxy import Proxy, Toxiproxy

INJECTED_SQLSTATES = ("53100", "53200", "57014", "25006", "55P03")
FAULTED_TABLES = ("list_member", "import_stage_batch", "exported_member", "applied_batch")

INSTALL_SQL = """
CREATE TABLE IF NOT EXISTS chaos_fault (sqlstate text NOT NULL, until timestamptz NOT NULL);
-- Counts the refusals: a sequence, as it survives the rollback the error causes.
CREATE SEQUENCE IF NOT EXISTS chaos_fault_hits;
CREATE OR REPLACE FUNCTION chaos_raise() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  code text;
BEGIN
  IF current_setting('chaos.driver', true) = 'on' THEN
    RETURN NULL;
  END IF;
  SELECT f.sqlstate INTO code FROM chaos_fault f WHERE f.until > clock_timestamp() LIMIT 1;
  IF code IS NOT NULL THEN
    PERFORM nextval('chaos_fault_hits');
    RAISE EXCEPTION 'chaos: injected SQLSTATE % on %', code, TG_TABLE_NAME USING ERRCODE = code;
  END IF;
  RETURN NULL;
END $$;
"""


def through_proxy(database_url: str, proxy: Proxy) -> str:
    """``database_url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(database_url)
    user, _, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}@{proxy.address}" if user else proxy.address))


def upstream_of(database_url: str) -> str:
    parts = urlsplit(database_url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"


async def install_error_trigger(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(INSTALL_SQL)
        for table in FAULTED_TABLES:
            await conn.execute(
                f"CREATE OR REPLACE TRIGGER chaos_fault BEFORE INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION chaos_raise()"
            )


async def remove_error_trigger(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for table in FAULTED_TABLES:
            await conn.execute(f"DROP TRIGGER IF EXISTS chaos_fault ON {table}")
        await conn.execute(
            "DROP FUNCTION IF EXISTS chaos_raise() CASCADE; DROP TABLE IF EXISTS chaos_fault; "
            "DROP SEQUENCE IF EXISTS chaos_fault_hits"
        )


async def inject_errors(pool: asyncpg.Pool, sqlstate: str, seconds: float) -> None:
    """From now on for ``seconds``, every write of the faulted tables fails with ``sqlstate``."""
    await pool.execute(
        "INSERT INTO chaos_fault (sqlstate, until) VALUES ($1, clock_timestamp() + make_interval(secs => $2))",
        sqlstate,
        seconds,
    )


async def refusals(pool: asyncpg.Pool) -> int:
    """How many statements of the services the injected errors refused."""
    row = await pool.fetchrow("SELECT last_value, is_called FROM chaos_fault_hits")
    return int(row["last_value"]) if row is not None and row["is_called"] else 0


async def cut_for(api: Toxiproxy, proxy: Proxy, seconds: float) -> None:
    await api.cut(proxy)
    try:
        await asyncio.sleep(seconds)
    finally:
        await api.restore(proxy)


async def delay_for(api: Toxiproxy, proxy: Proxy, seconds: float, latency_ms: int) -> None:
    await api.delay(proxy, latency_ms, jitter_ms=latency_ms // 4)
    try:
        await asyncio.sleep(seconds)
    finally:
        await api.undelay(proxy)


async def as_driver(conn: Any, sql: str, *args: object) -> str:  # a connection, pooled or not
    """One statement of the driver's own, which the injected errors let through."""
    async with conn.transaction():
        await conn.execute("SET LOCAL chaos.driver = 'on'")
        result: str = await conn.execute(sql, *args)
        return result
