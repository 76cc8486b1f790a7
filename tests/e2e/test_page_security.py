"""Who may read the pages, through the running services: credentials, the bind rule, headers, ecsim's /sim.

Real processes (``python -m services.<name>``) against the real Kafka and a fresh Postgres:

* reconcile with a credentials file: the page and the API answer 401 (with the challenges) without a
  credential, 200 with a bearer token or a user's password; the probes stay open; security headers on all.
* reconcile bound to 0.0.0.0 with no credential exits 2 and says why; with ``STATUS_PAGE_PUBLIC=true`` it
  starts and serves its page to anyone. ingest (probes only) starts on 0.0.0.0 without anything.
* ecsim with ``ECSIM_SIM_TOKEN``: ``/sim`` answers 401 without it; bound to 0.0.0.0 with no token, exit 2.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from shared.passwords import hash_password
from tests.fixtures.ecsim import EcsimFactory, ecsim_factory  # noqa: F401
from tests.fixtures.stack import ServiceProcess, StartService, start_service  # noqa: F401

pytestmark = pytest.mark.e2e

TOKEN = "e2e-status-page-token-0123"
PASSWORD = "a page viewer's password"
SIM_TOKEN = "e2e-ecsim-sim-token-0123"


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, CIMultiDict[str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.text(), CIMultiDict(resp.headers)


async def _exit_code(service: ServiceProcess, timeout: float = 30) -> int:
    return await asyncio.wait_for(service.process.wait(), timeout)


def _env(topic_prefix: str, database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "IMPORT_DROPZONE_URL": (tmp_path / "import").as_uri(),
        "EXPORT_DROPZONE_URL": (tmp_path / "export").as_uri(),
        **extra,
    }


async def test_the_page_and_api_need_a_credential(
    start_service: StartService,  # noqa: F811
    topic_prefix: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    credentials = tmp_path / "page-credentials"
    credentials.write_text(f"token:dashboards:{TOKEN}\nuser:alice:{hash_password(PASSWORD)}\n")
    reconcile = await start_service(
        "reconcile",
        env=_env(topic_prefix, database_url, tmp_path, STATUS_PAGE_CREDENTIALS_FILE=str(credentials)),
    )
    for path in ("/", "/status", "/api/status", "/api/runs"):
        status, body, headers = await _get(reconcile.url + path)
        assert status == 401, path
        assert headers.getall("WWW-Authenticate") == [
            'Bearer realm="audience-bridge"',
            'Basic realm="audience-bridge", charset="UTF-8"',
        ]
        assert "Audience Bridge" not in body
        status, _, _ = await _get(reconcile.url + path, {"Authorization": "Bearer not-the-token-at-all"})
        assert status == 401
    status, body, headers = await _get(reconcile.url + "/", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert "<html" in body.lower()
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    status, body, headers = await _get(reconcile.url + "/api/status", {"Authorization": f"Basic {basic}"})
    assert status == 200, body
    assert headers["X-Content-Type-Options"] == "nosniff"
    for probe in ("/healthz", "/readyz", "/metrics"):
        status, _, headers = await _get(reconcile.url + probe)
        assert status == 200, probe
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert any(line["event"] == "http_unauthenticated" for line in reconcile.log_lines())


async def test_bound_beyond_loopback_without_a_credential_reconcile_refuses_to_start(
    start_service: StartService,  # noqa: F811
    topic_prefix: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    env = _env(topic_prefix, database_url, tmp_path, HTTP_HOST="0.0.0.0")
    refused = await start_service("reconcile", env=env, wait=False)
    assert await _exit_code(refused) == 2
    (line,) = [line for line in refused.log_lines() if line["event"] == "invalid_settings"]
    assert "without a credential beyond loopback" in line["error"]
    assert "STATUS_PAGE_CREDENTIALS_FILE" in line["error"]
    assert "STATUS_PAGE_PUBLIC=true" in line["error"]
    assert not any(line["event"] == "http_listening" for line in refused.log_lines())

    # On purpose: public, the page is served to anyone.
    public = await start_service("reconcile", env={**env, "STATUS_PAGE_PUBLIC": "true"})
    status, _, headers = await _get(public.url + "/api/status")
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"

    # ingest serves only the probes: nothing to protect, it starts on 0.0.0.0 without a credential.
    ingest = await start_service("ingest", env=env)
    assert (await _get(ingest.url + "/readyz"))[0] == 200


async def test_ecsim_sim_needs_its_token(
    ecsim_factory: EcsimFactory,  # noqa: F811
    start_service: StartService,  # noqa: F811
    tmp_path: Path,
) -> None:
    ecsim = await ecsim_factory(ECSIM_SIM_TOKEN=SIM_TOKEN)
    status, body, headers = await _get(ecsim.base_url + "/sim/state")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="ecsim-sim"'
    assert "unauthorized" in body
    # The fixture (and audience-bridge demo) send the token ecsim was started with: the admin call succeeds.
    await ecsim.reset()
    assert isinstance(await ecsim.state(), dict)

    refused = await start_service(
        "ecsim",
        env={
            "HTTP_HOST": "0.0.0.0",
            "ECSIM_ADMIN_ENABLED": "true",
            "ECSIM_EXPORT_DROPZONE_URL": (tmp_path / "export").as_uri(),
            "ECSIM_IMPORT_DROPZONE_URL": (tmp_path / "import").as_uri(),
        },
        wait=False,
    )
    assert await _exit_code(refused) == 2
    assert any("ECSIM_SIM_TOKEN_FILE" in str(line.get("error")) for line in refused.log_lines())
