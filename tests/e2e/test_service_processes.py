"""Each service as a real subprocess: /healthz, /readyz (Kafka, Postgres, consumers), /metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from shared.settings import REPO_ROOT
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0, ""


@pytest.mark.parametrize("service", ["ingest", "reconcile", "publish", "ecsim"])
async def test_service_process_lifecycle(
    service: str, free_port: int, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HTTP_PORT": str(free_port),
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "INFO",
        # Never the local stack's folders: a test must not pick up (or move away) someone's real files.
        "IMPORT_DROPZONE_URL": f"file://{tmp_path / 'import'}",
        "EXPORT_DROPZONE_URL": f"file://{tmp_path / 'export'}",
        "ECSIM_IMPORT_DROPZONE_URL": f"file://{tmp_path / 'import'}",
        "ECSIM_EXPORT_DROPZONE_URL": f"file://{tmp_path / 'export'}",
    }
    log_path = tmp_path / f"{service}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{service}",
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{free_port}"
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await eventually(
                lambda: _get(session, base + "/readyz"), until=lambda r: r[0] == 200, timeout=60
            )
            assert '"ready"' in body
            status, body = await _get(session, base + "/healthz")
            assert status == 200
            assert "alive" in body
            status, body = await _get(session, base + "/metrics")
            assert status == 200
            assert "ab_service_ready 1.0" in body
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")]
    events = [line["event"] for line in lines]
    assert "service_started" in events
    assert events[-1] == "service_stopped"
    # aiokafka logs a first-join race with the group coordinator as an error; everything else must be clean.
    errors = [line for line in lines if line["level"] == "error" and not line.get("logger", "").startswith("aiokafka")]
    assert errors == []


async def test_bad_settings_exit_2_naming_the_variable(free_port: int) -> None:
    env = {**os.environ, "HTTP_PORT": str(free_port), "KAFKA_TOPIC_PARTITIONS": "-1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.reconcile",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"KAFKA_TOPIC_PARTITIONS" in err
