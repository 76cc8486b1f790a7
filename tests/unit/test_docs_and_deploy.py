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
    known = env_names(SETTINGS[service])
    # A setting may come from a file (Docker secrets): <NAME>_FILE of a known <NAME>.
    unknown = {v for v in env if v not in known and v.removesuffix("_FILE") not in known}
    assert not unknown, f"{service}: compose sets variables the service does not read: {unknown}"
    port = str(env["HTTP_PORT"])
    assert port == str(SETTINGS[service].model_fields["http_port"].default)
    # Nothing on the host by default; the ports override publishes it on loopback (README, "Security").
    assert "ports" not in spec
    override = yaml.safe_load((REPO_ROOT / "docker-compose.ports.yml").read_text())["services"]
    assert override[service]["ports"] == [f"127.0.0.1:{port}:{port}"]
    check = " ".join(spec["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in check


def test_compose_has_the_infrastructure() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    # A KRaft node with SASL/SCRAM, from the configuration the ACL test runs (deploy/kafka-sasl/).
    assert services["kafka"]["entrypoint"] == ["bash", "/etc/audience-bridge/kafka-sasl/kafka.sh"]
    template = (REPO_ROOT / "deploy/kafka-sasl/server.properties.template").read_text()
    assert "process.roles=broker,controller" in template
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in template
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "audience_bridge"
    for name in ("ingest", "reconcile", "publish"):
        assert set(services[name]["depends_on"]) == {"kafka", "kafka-acls", "postgres"}
