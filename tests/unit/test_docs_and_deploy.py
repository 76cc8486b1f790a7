"""The README and docker-compose.yml cannot drift from the code's settings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.registry import SETTINGS, env_names
from services.settings_doc import README, current_block, render
from shared.settings import REPO_ROOT


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text


def test_readme_settings_table_matches_the_models() -> None:
    assert current_block(README.read_text()) == render(), "run `make docs`"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_compose_service_matches_its_settings(service: str) -> None:
    spec = _compose()["services"][service]
    assert spec["command"] == [f"services.{service}"]
    env = spec["environment"]
    unknown = set(env) - env_names(SETTINGS[service])
    assert not unknown, f"{service}: compose sets variables the service does not read: {unknown}"
    port = str(env["HTTP_PORT"])
    assert port == str(SETTINGS[service].model_fields["http_port"].default)
    assert spec["ports"] == [f"{port}:{port}"]
    check = " ".join(spec["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in check


def test_compose_has_the_infrastructure() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "audience_bridge"
    for name in ("ingest", "reconcile", "publish"):
        assert set(services[name]["depends_on"]) == {"kafka", "postgres"}
