"""Kafka with SASL/SCRAM in the deployments: compose and the Kubernetes base give every service a principal of
its own, compose's broker creates exactly those SCRAM users, and the ACLs compose grants
(deploy/kafka-sasl/acls.txt, proven on a real broker by tests/integration/test_kafka_acls.py) are the README's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from shared.settings import REPO_ROOT

BRIDGE = ("ingest", "reconcile", "publish")
SASL = REPO_ROOT / "deploy" / "kafka-sasl"


def _acls() -> list[tuple[str, str, str, str, str]]:
    rows = []
    for line in (SASL / "acls.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            principal, kind, name, pattern, operation = line.split()
            rows.append((principal, kind, name.strip('"'), pattern, operation))
    return rows


def _readme_table() -> dict[str, list[str]]:
    """The README's ACL table: principal -> its row's cells."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("### Kafka (SASL/SCRAM and ACLs)", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_compose_gives_each_service_its_own_principal() -> None:
    compose: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    kafka_secrets = set(compose["services"]["kafka"]["secrets"])
    script = (SASL / "kafka.sh").read_text()
    for name in BRIDGE:
        spec = compose["services"][name]
        env = spec["environment"]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_USERNAME"] == name
        assert env["KAFKA_SASL_PASSWORD_FILE"] == f"/run/secrets/kafka_{name}_password"
        assert f"kafka_{name}_password" in spec["secrets"]
        # The broker writes this user's SCRAM credential from the same secret.
        assert f"kafka_{name}_password" in kafka_secrets
    assert re.search(r"for user in ingest reconcile publish;", script)


def test_the_kubernetes_base_gives_each_service_its_own_principal() -> None:
    common = (REPO_ROOT / "deploy/k8s/base/config/common.env").read_text()
    assert "KAFKA_SECURITY_PROTOCOL=SASL_SSL" in common
    assert "KAFKA_SASL_MECHANISM=SCRAM-SHA-512" in common
    for name in BRIDGE:
        env = (REPO_ROOT / f"deploy/k8s/base/config/{name}.env").read_text()
        assert f"KAFKA_SASL_USERNAME={name}\n" in env
        deployment = (REPO_ROOT / f"deploy/k8s/base/{name}.yaml").read_text()
        assert f"/run/secrets/audience-bridge/KAFKA_SASL_PASSWORD_{name.upper()}" in deployment


def test_the_acls_compose_grants_are_the_readmes() -> None:
    table = _readme_table()
    acls = _acls()
    for principal in BRIDGE:
        read, write, group, prefixed = table[principal]
        mine = [a for a in acls if a[0] == principal]
        for _, kind, name, pattern, operation in mine:
            if kind == "group":
                assert f"`P`{name}" in group
            elif pattern == "prefixed":
                assert operation.upper() in prefixed
            elif name.endswith(".dlq"):
                assert ".dlq" in write
            else:
                cell = read if operation == "Read" else write
                assert f"`P`{name}" in cell, f"{principal}: {operation} {name} is not in the README's table"
        # And the other way round: every topic the README lists for it is granted.
        for cell, operation in ((read, "Read"), (write, "Write")):
            for name in re.findall(r"`P`([a-z-]+(?:\.dlq)?)", cell):
                assert (principal, "topic", name, "literal", operation) in mine, f"{principal}: {operation} {name}"


def test_nobody_but_its_writers_may_write_the_export_requests() -> None:
    writers = {a[0] for a in _acls() if a[2] == "audience-export-requests" and a[4] == "Write"}
    assert writers == {"reconcile"}  # the workflows and the operators' CLI get theirs from the operator


def test_the_test_broker_is_composes() -> None:
    fixture = Path(REPO_ROOT / "tests/fixtures/sasl_kafka.py").read_text()
    assert '"server.properties.template"' in fixture
    assert '"acls.txt"' in fixture
