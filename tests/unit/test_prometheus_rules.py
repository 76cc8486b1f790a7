"""The alerting rules (deploy/prometheus/alerts.yml): valid for promtool, their unit tests pass, they query only
metrics a service registers, every alert is documented in the README, and they are wired into compose's
monitoring profile and the Kubernetes example.

promtool is Debian's ``prometheus`` package (deploy/local/promtool.sh, run by ``make tools``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy_k8s import render
from tests.unit.test_deploy_monitoring import all_series

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
K8S_ALERTS = REPO_ROOT / "deploy" / "k8s" / "base" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((REPO_ROOT / "tests" / "prometheus").glob("*.yml"))
PROMTOOL_SCRIPT = REPO_ROOT / "deploy" / "local" / "promtool.sh"
README = REPO_ROOT / "README.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    installed = subprocess.run(["bash", str(PROMTOOL_SCRIPT), "install"], capture_output=True, text=True, check=False)
    if installed.returncode != 0:
        pytest.fail(f"no promtool: deploy/local/promtool.sh install failed:\n{installed.stderr[-2000:]}")
    return installed.stdout.strip().splitlines()[-1]


def rules() -> list[dict[str, Any]]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = subprocess.run(
        [promtool(), "test", "rules", *(p.name for p in RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS[0].parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: a copy expecting a silent alert to fire is refused."""
    text = (RULE_TESTS[0]).read_text().replace("../../deploy/prometheus/alerts.yml", str(ALERTS))
    broken = text.replace(
        "      - eval_time: 2m\n        alertname: AudienceBridgeRunFailedOrBlocked\n        exp_alerts: []",
        "      - eval_time: 2m\n        alertname: AudienceBridgeRunFailedOrBlocked\n"
        "        exp_alerts:\n          - exp_labels: {severity: warning}",
    )
    assert broken != text
    (tmp_path / "broken.yml").write_text(broken)
    result = subprocess.run([promtool(), "test", "rules", "broken.yml"], capture_output=True, cwd=tmp_path)
    assert result.returncode != 0


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts()) <= tested, f"alerts never shown firing: {sorted(set(alerts()) - tested)}"


def test_rules_query_only_registered_metrics() -> None:
    used = {m for rule in rules() for m in re.findall(r"\bab_[a-z0-9_]+\b", rule["expr"])}
    assert used
    unknown = used - all_series()
    assert not unknown, f"alerts query metrics no service registers: {sorted(unknown)}"


def test_readme_documents_every_alert_and_threshold() -> None:
    section = README.read_text().split("\n### Alerts\n", 1)[1].split("\n## ", 1)[0]
    for name in alerts():
        assert f"`{name}`" in section, name
    for rule in rules():
        if "record" in rule:
            assert f"`{rule['record']}`" in section, rule["record"]


def test_compose_monitoring_profile_loads_the_rules() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["volumes"]
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]


def test_kubernetes_example_ships_the_same_rules() -> None:
    assert K8S_ALERTS.read_text() == ALERTS.read_text(), "deploy/k8s/base/prometheus/alerts.yml drifted: copy it"
    docs = render("base")
    (config_map,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "audience-bridge-prometheus-rules"
    ]
    assert yaml.safe_load(config_map["data"]["alerts.yml"]) == yaml.safe_load(ALERTS.read_text())
