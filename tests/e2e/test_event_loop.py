"""EVENT_LOOP through the running services: each runs on the loop it is told (uvloop by default), shows it on
/healthz and in its start-up log, serves, and stops cleanly on SIGTERM; ingest's real-time receiver processes
(handed their listening socket) run on it too; uvloop asked for but missing refuses the start."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from shared.settings import REPO_ROOT
from tests.bench.rss_watch import child_pids
from tests.e2e.test_realtime_flow import (  # noqa: F401
    OLD_KEY,
    SEG_VISITORS,
    VISITORS_DESTINATION,
    RealtimeStack,
    issuer,
    stack,
)
from tests.e2e.test_realtime_workers import _is_receiver
from tests.fixtures.bridge_db import ecid_of
from tests.fixtures.ecsim import ecsim, ecsim_server  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401

pytestmark = pytest.mark.e2e


def _started_on(service: ServiceProcess) -> list[str | None]:
    return [line.get("event_loop") for line in service.log_lines() if line.get("event") == "service_started"]


async def _healthz_loop(service: ServiceProcess) -> str:
    status, body = await service.get("/healthz")
    assert status == 200, body
    loop: str = orjson.loads(body)["event_loop"]
    return loop


@pytest.mark.parametrize(
    ("service", "loop"),
    [
        ("reconcile", "asyncio"),
        ("reconcile", "uvloop"),
        ("publish", "asyncio"),
        ("publish", None),  # unset: the default, uvloop
        ("ecsim", "asyncio"),
        ("ecsim", "uvloop"),
    ],
)
async def test_a_service_runs_on_the_loop_it_is_told_and_stops_cleanly(
    service: str,
    loop: str | None,
    start_service: StartService,  # noqa: F811
    topic_prefix: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)  # the services inherit this environment
    env = {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "IMPORT_DROPZONE_URL": f"file://{tmp_path / 'import'}",
        "EXPORT_DROPZONE_URL": f"file://{tmp_path / 'export'}",
        "ECSIM_IMPORT_DROPZONE_URL": f"file://{tmp_path / 'import'}",
        "ECSIM_EXPORT_DROPZONE_URL": f"file://{tmp_path / 'export'}",
        **({"EVENT_LOOP": loop} if loop is not None else {}),
    }
    expected = loop or "uvloop"
    running = await start_service(service, env=env)  # ready: Kafka, Postgres and consumers up on that loop
    assert await _healthz_loop(running) == expected
    assert _started_on(running) == [expected]
    assert await running.stop() == 0
    lines = running.log_lines()
    assert lines[-1]["event"] == "service_stopped"
    assert lines[-1]["exit_code"] == 0


@pytest.fixture(params=["uvloop", "asyncio"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The realtime stack's ingest with 2 receiver processes, its services on the loop of the parameter (they
    inherit this environment)."""
    monkeypatch.setenv("EVENT_LOOP", request.param)
    return "2"


async def test_ingest_and_its_receiver_processes_run_on_the_loop_asked(
    stack: RealtimeStack,  # noqa: F811
) -> None:
    asked = os.environ["EVENT_LOOP"]
    assert await _healthz_loop(stack.ingest) == asked
    assert _started_on(stack.ingest) == [asked]
    receivers = [
        line for line in stack.ingest.log_lines() if line.get("event") == "realtime_worker_listening"
    ]  # the receiver processes log to ingest's stderr
    assert sorted(line["realtime_worker"] for line in receivers) == [0, 1]
    assert {line["event_loop"] for line in receivers} == {asked}

    # Deliveries through the passed socket are answered and applied.
    added = await stack.change(VISITORS_DESTINATION, SEG_VISITORS, OLD_KEY, add=[ecid_of(i) for i in range(1, 16)])
    assert [m["status"] for m in added["messages"]] == [200, 200]
    await stack.wait_members("rt-visitors", set(range(1, 16)))

    pids = child_pids(stack.ingest.process.pid)
    assert len(pids) == 2
    assert await stack.ingest.stop() == 0
    assert [line for line in stack.ingest.log_lines() if line.get("event") == "realtime_worker_exit"] == []
    assert not [pid for pid in pids if _is_receiver(pid)]


async def test_uvloop_asked_but_missing_refuses_to_start(tmp_path: Path, free_port: int) -> None:
    # What a platform without uvloop's wheels gives: its import fails.
    fake = tmp_path / "site" / "uvloop"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no uvloop wheel for this platform')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(fake.parent), os.environ.get("PYTHONPATH")))),
        "HTTP_PORT": str(free_port),
        "EVENT_LOOP": "uvloop",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.reconcile",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    (refusal,) = [orjson.loads(line) for line in err.splitlines() if b"invalid_settings" in line]
    assert "EVENT_LOOP=uvloop but uvloop cannot be imported" in refusal["error"]
    assert "no uvloop wheel for this platform" in refusal["error"]
    assert b"service_started" not in err
