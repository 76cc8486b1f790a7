"""ecsim's /sim admin endpoints behind ECSIM_SIM_TOKEN, and the bind rule that keeps them off the network."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from services.ecsim.admin_auth import check_sim_binding
from services.ecsim.api import build_http_app
from services.ecsim.settings import EcsimSettings
from services.ecsim.simulator import Simulator
from shared.errors import ConfigError

SIM_TOKEN = "sim-token-0123456789"


def _settings(tmp_path: Path, **values: object) -> EcsimSettings:
    base: dict[str, object] = {
        "ecsim_admin_enabled": True,
        "ecsim_export_dropzone_url": (tmp_path / "export").as_uri(),
        "ecsim_import_dropzone_url": (tmp_path / "import").as_uri(),
    }
    return EcsimSettings(**{**base, **values})  # type: ignore[arg-type]


async def test_sim_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    sim = Simulator(_settings(tmp_path, ecsim_sim_token=SecretStr(SIM_TOKEN)))
    async with TestClient(TestServer(build_http_app(sim), host="127.0.0.1")) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": SIM_TOKEN}):
            resp = await client.get("/sim/state", headers=headers)
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="ecsim-sim"'
            assert (await resp.json())["code"] == "unauthorized"
            assert (await client.post("/sim/reset", headers=headers)).status == 401
        ok = await client.get("/sim/state", headers={"Authorization": f"Bearer {SIM_TOKEN}"})
        assert ok.status == 200
        # The platform's own API keeps its own credential: the sim token is not asked for there.
        assert (await client.get("/v1/traits/")).status == 401
        assert (await client.get("/healthz")).status in (200, 404)
    await sim.close()


async def test_without_a_token_sim_stays_open_as_before(tmp_path: Path) -> None:
    sim = Simulator(_settings(tmp_path))
    async with TestClient(TestServer(build_http_app(sim), host="127.0.0.1")) as client:
        assert (await client.get("/sim/state")).status == 200
    await sim.close()


def test_sim_beyond_loopback_needs_a_token_or_public(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ECSIM_SIM_TOKEN_FILE") as caught:
        check_sim_binding(_settings(tmp_path, http_host="0.0.0.0"))
    assert caught.value.context == {"http_host": "0.0.0.0"}
    check_sim_binding(_settings(tmp_path, http_host="0.0.0.0", ecsim_sim_token=SecretStr(SIM_TOKEN)))
    check_sim_binding(_settings(tmp_path, http_host="0.0.0.0", ecsim_sim_public=True))
    check_sim_binding(_settings(tmp_path, http_host="127.0.0.1"))
    check_sim_binding(_settings(tmp_path, http_host="0.0.0.0", ecsim_admin_enabled=False))
    with pytest.raises(ConfigError, match="16 characters"):
        check_sim_binding(_settings(tmp_path, ecsim_sim_token=SecretStr("short")))


async def test_the_demo_sends_the_sim_token_it_is_given(tmp_path: Path) -> None:
    from rich.console import Console

    from services.cli.demo import Demo, DemoFailed
    from shared.settings import KafkaSettings

    sim = Simulator(_settings(tmp_path, ecsim_sim_token=SecretStr(SIM_TOKEN)))
    async with TestClient(TestServer(build_http_app(sim), host="127.0.0.1")) as client:
        url = str(client.make_url("")).rstrip("/")

        def demo(token: str | None) -> Demo:
            return Demo(
                database_url="postgresql://unused",
                kafka=KafkaSettings(),
                ecsim_url=url,
                console=Console(),
                sim_token=token,
            )

        assert isinstance(await demo(SIM_TOKEN)._admin("GET", "/sim/state"), dict)
        with pytest.raises(DemoFailed) as refused:
            await demo(None)._admin("GET", "/sim/state")
        assert refused.value.context["status"] == 401
    await sim.close()
