"""Prometheus, Grafana and the README's metrics cannot drift from the metrics the services register.

The metric names come from the code: each service's app is built (no I/O happens before start) and its
registry lists every collector — the runtime's, the platform client's and the service's own.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from services.ecsim.app import EcsimApp
from services.ingest.app import IngestApp
from services.publish.app import PublishApp
from services.reconcile.app import ReconcileApp
from services.registry import SETTINGS
from shared.service import ServiceApp
from shared.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_K8S = REPO_ROOT / "deploy" / "prometheus" / "kubernetes.yml"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "audience-bridge.json"
README = REPO_ROOT / "README.md"
APPS: dict[str, Any] = {"ingest": IngestApp, "reconcile": ReconcileApp, "publish": PublishApp, "ecsim": EcsimApp}
# The series Prometheus stores per collector type (prometheus_client's exposition).
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}
# The reconcile metrics issue 6 asks for; they must stay registered (and so on the dashboard and in the README).
RECONCILE_METRICS = {
    "ab_runs_total",
    "ab_import_ids_total",
    "ab_list_members_changed_total",
    "ab_export_ids_excluded_total",
}


@dataclass(frozen=True)
class Metric:
    name: str  # as queried: counters with _total
    type: str
    labels: frozenset[str]
    services: frozenset[str]

    @property
    def series(self) -> set[str]:
        base = self.name.removesuffix("_total") if self.type == "counter" else self.name
        return {base + suffix for suffix in SUFFIXES[self.type]}


@functools.cache
def registered() -> dict[str, Metric]:
    found: dict[str, Metric] = {}
    for service, app_cls in APPS.items():
        app: ServiceApp = app_cls(SETTINGS[service]())
        collector: Any  # prometheus_client's Counter, Gauge, Histogram: their type, name and labels
        for collector in app.metrics.registry._collector_to_names:
            kind = collector._type
            name = collector._name + ("_total" if kind == "counter" else "")
            labels = frozenset(collector._labelnames)
            known = found.get(name)
            if known is not None:
                assert known.type == kind, f"{name} differs between services"
                assert known.labels == labels, f"{name} differs between services"
                found[name] = Metric(name, kind, labels, known.services | {service})
            else:
                found[name] = Metric(name, kind, labels, frozenset({service}))
    return found


def all_series() -> set[str]:
    return {s for m in registered().values() for s in m.series}


def _yaml(path: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_the_metrics_issue_6_asks_for_are_registered() -> None:
    assert set(registered()) >= RECONCILE_METRICS | {
        "ab_dropzone_files_total",
        "ab_export_ids_sent_total",
        "ab_platform_calls_total",
        "ab_platform_retries_total",
        "ab_consumer_lag",
        "ab_last_commit_timestamp_seconds",
        "ab_messages_dead_lettered_total",
    }


# --- docker compose: the monitoring profile -------------------------------------------------------------


def test_compose_monitoring_profile() -> None:
    services = _yaml(COMPOSE)["services"]
    for name in ("prometheus", "grafana"):
        spec = services[name]
        assert spec["profiles"] == ["monitoring"], f"{name} runs only with --profile monitoring"
        assert ":" in spec["image"], "pin the image"
        assert not spec["image"].endswith(":latest"), "pin the image"
        for volume in spec["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    for name in (*SETTINGS, "kafka", "postgres"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    prometheus = services["prometheus"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = services["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert set(grafana["depends_on"]) == {"prometheus"}


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = _yaml(PROMETHEUS)
    services = _yaml(COMPOSE)["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(SETTINGS)
    for name, job in jobs.items():
        port = services[name]["environment"]["HTTP_PORT"]
        assert job["metrics_path"] == "/metrics"
        assert [t for c in job["static_configs"] for t in c["targets"]] == [f"{name}:{port}"]
    assert config["global"]["scrape_timeout"] <= config["global"]["scrape_interval"]


def test_prometheus_kubernetes_job_matches_the_pod_annotations() -> None:
    (job,) = _yaml(PROMETHEUS_K8S)["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    text = yaml.safe_dump(job)
    for needed in ("app_kubernetes_io_part_of", "prometheus_io_scrape", "prometheus_io_port", "prometheus_io_path"):
        assert needed in text
    relabel = {r.get("target_label"): r for r in job["relabel_configs"]}
    assert relabel["job"]["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    for rule in job["relabel_configs"]:
        if "regex" in rule:
            re.compile(rule["regex"])


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    compose = _yaml(COMPOSE)["services"]
    (source,) = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    # Published on the host only through the ports override, and only on loopback (README, "Security").
    assert "ports" not in compose["prometheus"]
    assert "127.0.0.1:9090:9090" in _yaml(REPO_ROOT / "docker-compose.ports.yml")["services"]["prometheus"]["ports"]
    (provider,) = _yaml(GRAFANA / "provisioning" / "dashboards" / "audience-bridge.yml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = compose["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/" + DASHBOARD.name


# --- the dashboard ---------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_is_well_formed() -> None:
    data = dashboard()
    assert data["uid"]
    assert data["title"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in data["templating"]["list"]}
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            for used in re.findall(r"\$(\w+)", target["expr"]):
                assert used in variables or used.startswith("__"), f"{panel['title']}: unknown ${used}"


def test_dashboard_queries_only_metrics_the_code_registers() -> None:
    used = {m for expr in queries() for m in re.findall(r"\bab_[a-z0-9_]+\b", expr)}
    assert used
    unknown = used - all_series()
    assert not unknown, f"the dashboard queries metrics no service registers: {sorted(unknown)}"


def test_dashboard_shows_every_metric() -> None:
    used = {m for expr in queries() for m in re.findall(r"\bab_[a-z0-9_]+\b", expr)}
    missing = [m.name for m in registered().values() if not m.series & used]
    assert not missing, f"no panel shows {missing}"


def test_dashboard_has_time_since_last_commit() -> None:
    assert any("time() - " in q and "ab_last_commit_timestamp_seconds" in q for q in queries())


# --- the README's metrics section -----------------------------------------------------------------------


def readme_metrics() -> dict[str, tuple[str, set[str]]]:
    """The README's metrics table: name -> (type, labels)."""
    text = README.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`ab_"):
            labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


@pytest.mark.parametrize("name", sorted(registered()))
def test_readme_describes_every_metric(name: str) -> None:
    rows = readme_metrics()
    metric = registered()[name]
    assert name in rows, f"README, Metrics: no row for {name}"
    kind, labels = rows[name]
    assert kind == metric.type
    assert labels == set(metric.labels), f"{name}: labels {sorted(metric.labels)}"


def test_readme_lists_no_unknown_metric() -> None:
    assert set(readme_metrics()) <= set(registered())
