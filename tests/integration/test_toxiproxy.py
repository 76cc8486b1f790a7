"""The fault proxy the chaos scenario uses (tests/chaos/toxiproxy.py), against the real Postgres: connections
through it work, are delayed by a latency toxic, refused and closed by a cut, and work again once restored."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.chaos.toxiproxy import toxiproxy_server

pytestmark = pytest.mark.integration


def _through(database_url: str, address: str) -> str:
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2 else address))


async def test_postgres_through_toxiproxy_delayed_cut_and_restored(database_url: str, tmp_path: Path) -> None:
    parts = urlsplit(database_url)
    async with toxiproxy_server(tmp_path / "toxiproxy.log") as api:
        proxy = await api.create("postgres", f"{parts.hostname}:{parts.port or 5432}")
        url = _through(database_url, proxy.address)
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT 1") == 1

        await api.delay(proxy, 400)
        began = time.monotonic()
        assert await conn.fetchval("SELECT 2") == 2
        assert time.monotonic() - began >= 0.4
        await api.undelay(proxy)

        await api.cut(proxy)
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await conn.fetchval("SELECT 3", timeout=5)
        with pytest.raises(OSError):
            await asyncpg.connect(url, timeout=5)

        await api.restore(proxy)
        again = await asyncpg.connect(url)
        assert await again.fetchval("SELECT 4") == 4
        await again.close()
        conn.terminate()
