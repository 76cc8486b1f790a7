"""deploy/k8s cannot drift from the code, nor from Kubernetes.

The manifests are rendered by a real kustomize (deploy/local/kustomize.sh builds the pinned version from
its Go module into the cache once; ``KUSTOMIZE=/path/to/kustomize`` overrides it) and every object is
validated against the Kubernetes JSON Schemas shipped offline by the ``kubernetes-validate`` package
(strict: unknown fields fail). Then each Deployment is checked against its service's settings model
(services/registry.py): variable names, values, ports, probes, secrets as ``*_FILE`` files, shutdown grace.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from services.reconcile.catalog import load_catalog_file
from services.registry import SETTINGS, env_names
from shared.settings import REPO_ROOT, BaseServiceSettings

# Building kustomize the first time on a machine takes about a minute (then it is cached).
pytestmark = pytest.mark.timeout(600)

K8S = REPO_ROOT / "deploy" / "k8s"
KUSTOMIZE_SCRIPT = REPO_ROOT / "deploy" / "local" / "kustomize.sh"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/production")
OVERLAYS = ("overlays/dev", "overlays/production")
SECRET_EXAMPLE = K8S / "overlays" / "production" / "secret.example.yaml"
# The oldest Kubernetes minor still commonly supported, and the newest the validator knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
BRIDGE = ("ingest", "reconcile", "publish")
FILE_SUFFIX = "_FILE"
# What a Deployment's shutdown needs besides SHUTDOWN_GRACE_S: the pool's close is bounded at 10 s.
SHUTDOWN_MARGIN_S = 10


@functools.cache
def kustomize() -> tuple[str, ...]:
    if os.environ.get("KUSTOMIZE"):
        return (os.environ["KUSTOMIZE"],)
    found = subprocess.run(["bash", str(KUSTOMIZE_SCRIPT), "which"], capture_output=True, text=True, check=False)
    if found.returncode == 0 and found.stdout.strip():
        return (found.stdout.strip(),)
    if shutil.which("go"):
        built = subprocess.run(["bash", str(KUSTOMIZE_SCRIPT), "install"], capture_output=True, text=True, check=False)
        if built.returncode == 0:
            return (built.stdout.strip().splitlines()[-1],)
        pytest.fail(f"deploy/local/kustomize.sh install failed:\n{built.stderr[-2000:]}")
    if shutil.which("kubectl"):
        return ("kubectl", "kustomize")
    pytest.fail("no kustomize: install Go and run deploy/local/kustomize.sh install, or set KUSTOMIZE")


@functools.cache
def _render(path: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run([*kustomize(), "build", str(K8S / path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"kustomize build {path} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(path: str) -> list[dict[str, Any]]:
    """The objects ``kustomize build`` makes of deploy/k8s/<path> (a fresh copy: tests may change them)."""
    return copy.deepcopy(list(_render(path)))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def environment(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """Every variable the container gets: its ConfigMaps (envFrom, in order) and then its own env."""
    c = container(deployment)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "settings come from ConfigMaps; secrets only as *_FILE files"
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in c.get("env", []):
        assert "valueFrom" not in var, f"{var['name']}: secrets are mounted as files and named by *_FILE"
        env[var["name"]] = var["value"]
    return env


def secret_fields(cls: type[BaseServiceSettings]) -> set[str]:
    def is_secret(annotation: Any) -> bool:
        return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())

    return {name.upper() for name, field in cls.model_fields.items() if is_secret(field.annotation)}


def file_setting(var: str, known: set[str]) -> str | None:
    """The setting ``var`` gives as a file path (``<NAME>_FILE``), or None when ``var`` is a setting itself."""
    if var in known:
        return None
    base = var.removesuffix(FILE_SUFFIX)
    assert var.endswith(FILE_SUFFIX), f"{var} is not a setting, nor <setting>_FILE"
    assert base in known, f"{var} is not a setting, nor <setting>_FILE"
    return base


def deployments(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in find(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        assert name in SETTINGS, f"Deployment {name} is not a service of services/registry.py"
        yield name, deployment


def effective(cls: type[BaseServiceSettings], env: dict[str, str], name: str) -> Any:
    return env.get(name.upper(), cls.model_fields[name].default)


# --- Kubernetes schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_object_is_valid_kubernetes(path: str) -> None:
    docs = render(path)
    assert docs
    for doc in docs:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{path}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_the_secret_example_is_valid_kubernetes() -> None:
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    assert secret["metadata"]["name"] == "audience-bridge-credentials"


def test_the_validator_catches_a_bad_manifest() -> None:
    deployment = one(render("base"), "Deployment", "ingest")
    container(deployment)["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


# --- the manifests against the code ---------------------------------------------------------------------


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_deployments_set_only_their_services_settings(path: str) -> None:
    docs = render(path)
    for name, deployment in deployments(docs):
        cls = SETTINGS[name]
        known = env_names(cls)
        env = environment(docs, deployment)
        for var in env:
            assert var in known or var.removesuffix(FILE_SUFFIX) in known, (
                f"{path}: {name} sets {var}, which {cls.__name__} does not read"
            )
        # The values are valid settings (as the service would parse them at start).
        plain = {k.lower(): v for k, v in env.items() if file_setting(k, known) is None}
        cls.model_validate(plain)
        assert container(deployment)["args"] == [f"services.{name}"], "the image's entrypoint is python -m"
        assert container(deployment)["image"].split("/")[-1].startswith("audience-bridge")


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_secrets_are_files_from_the_credentials_secret(path: str) -> None:
    docs = render(path)
    generated = find(docs, "Secret")
    example_keys = set(yaml.safe_load(SECRET_EXAMPLE.read_text())["stringData"])
    for name, deployment in deployments(docs):
        env = environment(docs, deployment)
        secrets = secret_fields(SETTINGS[name])
        assert not secrets & set(env), f"{path}: {name} has a secret as a plain variable"
        if name in BRIDGE:
            # Without these the service would use its local defaults (a localhost database, ecsim's secret).
            assert "DATABASE_URL_FILE" in env
            if "PLATFORM_CLIENT_SECRET" in secrets:
                assert "PLATFORM_CLIENT_SECRET_FILE" in env
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in container(deployment).get("volumeMounts", [])}
        for var, value in env.items():
            # Any setting may be read from a file (S3_ACCESS_KEY_ID sits beside its secret key); secrets must be.
            if file_setting(var, env_names(SETTINGS[name])) is None:
                continue
            folder, key = value.rsplit("/", 1)
            mount = mounts.get(folder)
            assert mount is not None, f"{path}: {name}: {var} points outside a mounted volume"
            assert mount.get("readOnly") is True
            volume = volumes[mount["name"]]
            assert "secret" in volume, f"{path}: {name}: {var} is not read from a Secret"
            secret_name = volume["secret"]["secretName"]
            if generated:
                keys = set(one(docs, "Secret", secret_name).get("data", {}))
                assert key in keys, f"{path}: the Secret {secret_name} has no key {key} (for {var})"
            else:
                assert secret_name == "audience-bridge-credentials"
                assert key in example_keys, f"secret.example.yaml does not show the key {key} ({var})"


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_probes_ports_and_services_follow_http_port(path: str) -> None:
    docs = render(path)
    for name, deployment in deployments(docs):
        cls = SETTINGS[name]
        env = environment(docs, deployment)
        port = int(effective(cls, env, "http_port"))
        assert effective(cls, env, "http_host") == "0.0.0.0", f"{name}: probes need HTTP_HOST=0.0.0.0"
        c = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": port}

        def probe_port(probe: dict[str, Any], *, ports: dict[str, int] = ports) -> int:
            target = probe["httpGet"]["port"]
            return ports[target] if isinstance(target, str) else int(target)

        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probe_port(c["readinessProbe"]) == port
        assert probe_port(c["livenessProbe"]) == port
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(port)
        assert annotations.get("prometheus.io/path") == "/metrics"
        service = one(docs, "Service", name)
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        (service_port,) = service["spec"]["ports"]
        assert service_port["port"] == port
        assert service_port["targetPort"] in ("http", port)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_shutdown_grace_and_resources(path: str) -> None:
    docs = render(path)
    for name, deployment in deployments(docs):
        env = environment(docs, deployment)
        grace = float(effective(SETTINGS[name], env, "shutdown_grace_s"))
        spec = deployment["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] >= grace + SHUTDOWN_MARGIN_S, (
            f"{path}: {name}: Kubernetes would kill the pod before SHUTDOWN_GRACE_S and the pool's close"
        )
        resources = container(deployment)["resources"]
        for part in ("requests", "limits"):
            assert set(resources[part]) >= {"cpu", "memory"}, f"{path}: {name} lacks resource {part}"


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_replicas_fit_the_partitions_and_ingest_runs_once(path: str) -> None:
    docs = render(path)
    for name, deployment in deployments(docs):
        env = environment(docs, deployment)
        replicas = deployment["spec"].get("replicas", 1)
        if name in ("ingest", "ecsim"):
            # ingest: every replica would watch the import drop zone; ecsim: its state is in memory.
            assert replicas == 1
            assert deployment["spec"]["strategy"]["type"] == "Recreate"
        else:
            partitions = int(effective(SETTINGS[name], env, "kafka_topic_partitions"))
            assert replicas <= partitions, f"{path}: {name}: replicas beyond the partitions would stay idle"


def test_dev_overlay_runs_ecsim_on_the_shared_drop_zones() -> None:
    docs = render("overlays/dev")
    ecsim = one(docs, "Deployment", "ecsim")
    ecsim_env = environment(docs, ecsim)
    claims = {}
    for name in ("ingest", "publish", "ecsim"):
        spec = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "dropzones"]
        claims[name] = volume["persistentVolumeClaim"]["claimName"]
        mounts = {m["name"]: m["mountPath"] for m in container(one(docs, "Deployment", name))["volumeMounts"]}
        assert mounts["dropzones"] == "/data/dropzones"
    assert len(set(claims.values())) == 1
    one(docs, "PersistentVolumeClaim", claims["ecsim"])
    ingest_env = environment(docs, one(docs, "Deployment", "ingest"))
    publish_env = environment(docs, one(docs, "Deployment", "publish"))
    assert ingest_env["IMPORT_DROPZONE_URL"] == ecsim_env["ECSIM_IMPORT_DROPZONE_URL"]
    assert publish_env["EXPORT_DROPZONE_URL"] == ecsim_env["ECSIM_EXPORT_DROPZONE_URL"]
    ecsim_port = ecsim_env["HTTP_PORT"]
    for env in (ingest_env, publish_env):
        assert env["PLATFORM_IMS_URL"] == f"http://ecsim:{ecsim_port}/ims/token/v3"
        assert env["PLATFORM_API_URL"] == f"http://ecsim:{ecsim_port}/v1"
    # Both sides of the one credential read the same file.
    assert ecsim_env["ECSIM_CLIENT_SECRET_FILE"] == ingest_env["PLATFORM_CLIENT_SECRET_FILE"]
    # ecsim runs from the dev image (the Dockerfile's dev target): the bridge's runtime image leaves it out.
    assert container(ecsim)["image"] == "audience-bridge-dev:local"
    for name in BRIDGE:
        assert container(one(docs, "Deployment", name))["image"] == "audience-bridge:local"


def test_production_overlay_uses_s3_tls_and_the_catalog(tmp_path: Path) -> None:
    docs = render("overlays/production")
    assert not find(docs, "Secret"), "production credentials are created out of band, never rendered"
    assert not find(docs, "Deployment", "ecsim")
    ingest_env = environment(docs, one(docs, "Deployment", "ingest"))
    publish_env = environment(docs, one(docs, "Deployment", "publish"))
    reconcile_env = environment(docs, one(docs, "Deployment", "reconcile"))
    assert ingest_env["IMPORT_DROPZONE_URL"].startswith("s3://")
    assert publish_env["EXPORT_DROPZONE_URL"].startswith("s3://")
    assert reconcile_env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert "KAFKA_SASL_PASSWORD_FILE" in reconcile_env
    assert ingest_env["PLATFORM_API_URL"].startswith("https://")
    # The catalog mounted for CATALOG_FILE is one reconcile accepts.
    catalog = one(docs, "ConfigMap", _mounted_configmap(one(docs, "Deployment", "reconcile"), "catalog"))
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog["data"][Path(reconcile_env["CATALOG_FILE"]).name])
    assert load_catalog_file(path).import_audiences


def _mounted_configmap(deployment: dict[str, Any], volume: str) -> str:
    for v in deployment["spec"]["template"]["spec"]["volumes"]:
        if v["name"] == volume:
            name: str = v["configMap"]["name"]
            return name
    raise AssertionError(f"no volume {volume}")
