"""The deployment defaults the README's "Security" section promises, kept in the files themselves.

docker-compose.yml: no port on the host unless the ports override adds it (and then on loopback only),
every secret a Docker secret file read through ``*_FILE``, Grafana's admin password required.
deploy/k8s: reconcile bound beyond loopback always has its page credentials (it would not start without),
ecsim's /sim its token, and NetworkPolicies let each service reach only what it needs.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from services.registry import SETTINGS
from shared.http_auth import MIN_TOKEN_CHARS, is_loopback, parse_credentials
from shared.settings import REPO_ROOT, PageAuthSettings
from tests.unit.test_deploy_k8s import KUSTOMIZATIONS, deployments, environment, find, one, render

COMPOSE = REPO_ROOT / "docker-compose.yml"
PORTS_OVERRIDE = REPO_ROOT / "docker-compose.ports.yml"
SECRETS_SCRIPT = REPO_ROOT / "deploy" / "compose" / "secrets.sh"

# Values a secret may never have in the compose file: the local defaults that used to be inline.
INLINE_SECRETS = ("audience_bridge:audience_bridge@", "ecsim-local-secret")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


# --- docker compose --------------------------------------------------------------------------------------


def test_compose_publishes_nothing_on_the_host_by_default() -> None:
    services = _compose()["services"]
    published = {name: spec["ports"] for name, spec in services.items() if "ports" in spec}
    assert published == {}
    override = yaml.safe_load(PORTS_OVERRIDE.read_text())["services"]
    for name, spec in override.items():
        assert name in services
        for port in spec["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name}: the override publishes {port} beyond loopback"


def test_compose_secrets_are_files_read_through_file_settings() -> None:
    compose = _compose()
    declared = compose["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"}
        assert secret["file"] == f"./secrets/{name}"
        assert f"write {name} " in SECRETS_SCRIPT.read_text(), f"deploy/compose/secrets.sh does not create {name}"
    assert "/secrets/" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    for name, spec in compose["services"].items():
        env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
        for var, value in env.items():
            assert not any(s in value for s in INLINE_SECRETS), f"{name}: {var} is inline"
            if value.startswith("/run/secrets/"):
                assert var.endswith(("_FILE", "__FILE")), f"{name}: {var} names a secret file"
                assert value.removeprefix("/run/secrets/") in spec.get("secrets", []), f"{name}: {var} not mounted"
        if name in SETTINGS:
            cls = SETTINGS[name]
            secret_vars = {n.upper() for n, f in cls.model_fields.items() if "SecretStr" in repr(f.annotation)}
            assert not secret_vars & set(env), f"{name}: a secret as a plain variable"


def test_compose_pages_have_credentials_and_grafana_a_required_password() -> None:
    services = _compose()["services"]
    for name, spec in services.items():
        env = spec.get("environment") or {}
        if name == "reconcile":
            assert issubclass(SETTINGS[name], PageAuthSettings)
            assert env["HTTP_HOST"] == "0.0.0.0"
            assert env["STATUS_PAGE_CREDENTIALS_FILE"] == "/run/secrets/status_page_credentials"
        assert str(env.get("STATUS_PAGE_PUBLIC", "false")).lower() == "false"
        assert str(env.get("ECSIM_SIM_PUBLIC", "false")).lower() == "false"
    assert services["ecsim"]["environment"]["ECSIM_SIM_TOKEN_FILE"] == "/run/secrets/ecsim_sim_token"
    grafana = services["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert services["grafana"]["secrets"] == ["grafana_admin_password"]
    assert "${GRAFANA_ADMIN_PASSWORD" not in COMPOSE.read_text()


# --- Kubernetes: credentials -----------------------------------------------------------------------------


def _secret_value(docs: list[dict[str, Any]], name: str, key: str) -> str | None:
    found = find(docs, "Secret", name)
    if not found:
        return None
    return base64.b64decode(found[0]["data"][key]).decode()


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_k8s_pages_beyond_loopback_have_credentials(path: str) -> None:
    docs = render(path)
    for name, deployment in deployments(docs):
        env = environment(docs, deployment)
        host = env.get("HTTP_HOST", "127.0.0.1")
        assert env.get("STATUS_PAGE_PUBLIC", "false") == "false"
        if name == "reconcile" and not is_loopback(host):
            assert env["STATUS_PAGE_CREDENTIALS_FILE"] == "/run/secrets/audience-bridge/STATUS_PAGE_CREDENTIALS"
            generated = _secret_value(docs, "audience-bridge-credentials", "STATUS_PAGE_CREDENTIALS")
            if generated is not None:  # the dev overlay's: it must parse, and name someone
                assert parse_credentials(generated)
        if name == "ecsim" and env.get("ECSIM_ADMIN_ENABLED") == "true" and not is_loopback(host):
            assert env["ECSIM_SIM_TOKEN_FILE"] == "/run/secrets/audience-bridge/ECSIM_SIM_TOKEN"
            token = _secret_value(docs, "audience-bridge-credentials", "ECSIM_SIM_TOKEN")
            assert token is None or len(token) >= MIN_TOKEN_CHARS


# --- Kubernetes: network policies --------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _policies_for(docs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in find(docs, "NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)]


def _egress_ports(policies: list[dict[str, Any]]) -> set[int]:
    ports: set[int] = set()
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            for port in rule.get("ports", []):
                ports.update(range(port["port"], port.get("endPort", port["port"]) + 1))
    return ports


def _ingress_peers(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']}: an ingress rule open to everyone"
            peers.extend(rule["from"])
    return peers


EXPECTED_EGRESS = {
    "ingest": {53, 443, 5432, 9092, 9093, 9094},
    "publish": {53, 443, 5432, 9092, 9093, 9094},
    "reconcile": {53, 5432, 9092, 9093, 9094},
}


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_k8s_network_policies_allow_only_what_each_service_needs(path: str) -> None:
    docs = render(path)
    deny = one(docs, "NetworkPolicy", "audience-bridge-default-deny")["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    with_ecsim = bool(find(docs, "Deployment", "ecsim"))
    for name, deployment in deployments(docs):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        policies = _policies_for(docs, labels)
        types = {t for p in policies for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, f"{path}: {name} is not isolated both ways"
        egress = _egress_ports(policies)
        if name == "ecsim":
            assert egress == set(), "ecsim reaches nothing"
        else:
            assert egress == EXPECTED_EGRESS[name] | ({8090} if with_ecsim and name != "reconcile" else set())
        peers = _ingress_peers(policies)
        allowed = [p["podSelector"] for p in peers]
        assert {"matchLabels": {"app.kubernetes.io/name": "prometheus"}} in allowed, f"{name}: not scraped"
        viewer = {"matchLabels": {"audience-bridge.io/status-page-viewer": "true"}}
        assert (viewer in allowed) == (name == "reconcile"), f"{name}: page viewers"
        for peer in peers:
            assert "ipBlock" not in peer, f"{name}: opened to addresses"
