"""Fixtures shared by every test: the real local Kafka and Postgres, isolated per test.

Kafka and Postgres are the real servers from deploy/local (``make test`` starts them; if they are not
running, the session starts them and stops them again at the end). Each test gets its own topic prefix
and its own freshly created database, so tests neither see each other's data nor depend on order.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from shared.settings import REPO_ROOT
from tests.fixtures.cleanup import CLEANUP
from tests.helpers import delete_topics_with_prefix, drop_database

# Two shared cores run Kafka, Postgres and the tests at once: time-based health checks would flake.
hypothesis_settings.register_profile(
    "bridge", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bridge"))

# ecsim: its session process is then one fixture for every module (see tests/fixtures/ecsim.py).
pytest_plugins = [
    "tests.fixtures.bridge_db",
    "tests.fixtures.ecsim",
    "tests.fixtures.import_batches",
    "tests.fixtures.local_stack",
]

LOCAL = REPO_ROOT / "deploy" / "local"
DEFAULT_DSN = "postgresql://audience_bridge:audience_bridge@127.0.0.1:5432/audience_bridge"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _kafka_address() -> tuple[str, int]:
    host, _, port = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092").split(",")[0].rpartition(":")
    return host, int(port)


def _postgres_address() -> tuple[str, int]:
    parsed = urlsplit(_admin_dsn())
    return parsed.hostname or "127.0.0.1", parsed.port or 5432


@pytest.fixture(scope="session")
def infra() -> Iterator[None]:
    """Make sure the local Kafka broker and Postgres run; stop what this session had to start."""
    started: list[str] = []
    if not _answers(*_kafka_address()):
        subprocess.run([str(LOCAL / "kafka.sh"), "start"], check=True)
        started.append("kafka.sh")
    if not _answers(*_postgres_address()):
        subprocess.run([str(LOCAL / "postgres.sh"), "start"], check=True)
        started.append("postgres.sh")
    yield
    CLEANUP.drain()  # every test's database and topics gone before the servers may stop
    for script in reversed(started):
        subprocess.run([str(LOCAL / script), "stop"], check=False)


@pytest.fixture
def topic_prefix(infra: None) -> Iterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    CLEANUP.submit(f"topics {prefix}*", lambda: delete_topics_with_prefix(bootstrap, prefix))


@pytest.fixture
def kafka_bootstrap(infra: None) -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def _admin_dsn() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_DSN)


def _with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


@pytest_asyncio.fixture
async def database_url(infra: None) -> AsyncIterator[str]:
    """A fresh, empty database for this test (dropped afterwards)."""
    name = f"ab_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_admin_dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(_admin_dsn(), name)
    admin_dsn = _admin_dsn()
    CLEANUP.submit(f"database {name}", lambda: drop_database(admin_dsn, name))


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest_asyncio.fixture(autouse=True)
async def _fail_on_unhandled_loop_exceptions() -> AsyncIterator[None]:
    """An exception nobody awaited (a crashed background task) fails the test instead of passing silently."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    loop.set_exception_handler(previous)
    if errors:
        pytest.fail(f"unhandled exception(s) in the event loop: {[c.get('message') for c in errors]}")


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"
