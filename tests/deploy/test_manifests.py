"""The Kubernetes manifests: rendered with kustomize (base and production overlay),
validated offline with kubernetes-validate --strict, and checked for the shape
issue 10 asks for (replicas, gRPC probes, resources, disruption budgets, no secret
values, settings the services really read)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import BIN, K8S, ROOT, Manifests

from trinity_platform.config import (
    DEFAULT_PORTS,
    load_settings,
    security_settings_table,
    settings_table,
)
from trinity_work.executor.config import load_config

SERVICES = tuple(DEFAULT_PORTS)
PROJECT_VERSION = re.search(
    r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
)


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
    )


def test_manifests_pass_strict_validation(rendered: tuple[str, Manifests], tmp_path: Path) -> None:
    name, manifests = rendered
    path = tmp_path / f"{name}.yaml"
    path.write_text(manifests.text)
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # built-in kinds only: every document had a schema to be checked against
    kinds = {d["kind"] for d in manifests.documents}
    assert kinds <= {
        "Namespace",
        "ConfigMap",
        "ServiceAccount",
        "Service",
        "Deployment",
        "StatefulSet",
        "PodDisruptionBudget",
        "Job",
    }


def test_strict_validation_rejects_an_unknown_field(
    rendered: tuple[str, Manifests], tmp_path: Path
) -> None:
    """The validation above can fail: a misspelt field is refused."""
    _, manifests = rendered
    documents = [dict(d) for d in manifests.documents]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    result = validate(path)
    assert result.returncode != 0
    assert "replica" in result.stdout + result.stderr


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in c.get("env", [])}


@pytest.mark.parametrize("service", SERVICES)
def test_service_deployment_shape(rendered: tuple[str, Manifests], service: str) -> None:
    name, manifests = rendered
    port = DEFAULT_PORTS[service]
    deployment = manifests.get("Deployment", f"trinity-{service}")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    c = container(deployment)
    assert c["image"].split("/")[-1].startswith(f"{service}:")
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "grpc"] == [port]
    env = env_of(c)
    assert env[f"TRINITY_{service.upper()}_LISTEN"]["value"] == f"0.0.0.0:{port}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if name == "production":  # mutual TLS: the image's health check, which speaks it
            command = ["python", "/opt/trinity/share/healthcheck.py", f"127.0.0.1:{port}"]
            assert c[probe]["exec"]["command"] == command, probe
        else:
            assert c[probe]["grpc"] == {"port": port}, probe
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # writable folders the read-only image needs
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/var/lib/trinity", "/tmp"}
    # its own database, from a Secret
    database = env[f"TRINITY_{service.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert database == {"name": f"trinity-{service}-database", "key": "url"}

    svc = manifests.get("Service", f"trinity-{service}")
    assert svc["spec"]["selector"] == labels
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, "grpc")]
    # Clients reach every replica: dns:/// over a headless Service (issue 19 §3).
    headless = manifests.get("Service", f"trinity-{service}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == labels
    assert [(p["port"], p["targetPort"]) for p in headless["spec"]["ports"]] == [(port, "grpc")]
    config = manifests.get("ConfigMap", "trinity-config")["data"]
    assert (
        config[f"TRINITY_{service.upper()}_TARGET"] == f"dns:///trinity-{service}-headless:{port}"
    )

    pdb = manifests.get("PodDisruptionBudget", f"trinity-{service}")
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_executor_deployment(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    deployment = manifests.get("Deployment", "trinity-executor")
    assert deployment["spec"]["replicas"] >= 2
    c = container(deployment)
    env = env_of(c)
    config_path = Path(env["TRINITY_EXECUTOR_CONFIG"]["value"])
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_map = manifests.get("ConfigMap", "trinity-executor-config")
    assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_path.name in config_map["data"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["TRINITY_EXECUTOR_ID"]["value"] == "executor:k8s/$(POD_NAME)"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    pdb = manifests.get("PodDisruptionBudget", "trinity-executor")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_executor_configurations_load(rendered: tuple[str, Manifests], tmp_path: Path) -> None:
    """The executors' YAML is read by the executor's own loader, as the pods will."""
    name, manifests = rendered
    config_map = manifests.get("ConfigMap", "trinity-executor-config")
    path = tmp_path / "executor.yaml"
    path.write_text(config_map["data"]["executor.yaml"])
    config = load_config(str(path))
    assert config.agents, name


def test_no_secret_values(rendered: tuple[str, Manifests]) -> None:
    """No Secret objects; every credential-like variable comes from a secretKeyRef."""
    _, manifests = rendered
    assert manifests.of_kind("Secret") == []
    sensitive = re.compile(r"TOKEN|PASSWORD|SECRET|DATABASE_URL|KEY")
    for workload in manifests.of_kind("Deployment") + manifests.of_kind("Job"):
        for variable in container(workload).get("env", []):
            if sensitive.search(variable["name"]):
                assert "secretKeyRef" in variable.get("valueFrom", {}), variable
    for config_map in manifests.of_kind("ConfigMap"):
        for key, value in config_map["data"].items():
            # a *_KEY_FILE is the path where a Secret is mounted, not a secret
            if not key.endswith("_KEY_FILE"):
                assert not sensitive.search(key), (config_map["metadata"]["name"], key)
            # credentials in the executor's file are ${NAME} references only
            for header in re.findall(r"Bearer (\S+)", value):
                assert re.fullmatch(r'\$\{[A-Z_]+\}"?', header), header


def test_config_names_only_real_settings(rendered: tuple[str, Manifests]) -> None:
    """Every variable in trinity-config is one the services read (config.settings_table)."""
    _, manifests = rendered
    known = set()
    for variable, _default, _meaning in settings_table() + security_settings_table():
        if "<SERVICE>" in variable:
            known |= {variable.replace("<SERVICE>", s.upper()) for s in SERVICES}
        else:
            known.add(variable)
    data = manifests.get("ConfigMap", "trinity-config")["data"]
    assert set(data) <= known, set(data) - known
    assert data["TRINITY_NATS_URL"].startswith("nats://nats:")


# PostgreSQL's default max_connections, the connections it reserves for superusers,
# and what the budget leaves for operators (psql, backups, monitoring).
SERVER_MAX_CONNECTIONS, SUPERUSER_RESERVED, OPERATOR_HEADROOM = 100, 3, 5


def test_connection_budget_fits_the_server(rendered: tuple[str, Manifests]) -> None:
    """(replicas + surge) x (pool + overflow), summed over the services, fits the server
    (deploy/README.md, connection budget)."""
    _, manifests = rendered
    config = manifests.get("ConfigMap", "trinity-config")["data"]
    # the certificate files exist in the pods only
    config = {k: v for k, v in config.items() if not k.startswith("TRINITY_TLS_")}
    total = 0
    for service in SERVICES:
        deployment = manifests.get("Deployment", f"trinity-{service}")["spec"]
        pods = deployment["replicas"] + deployment["strategy"]["rollingUpdate"]["maxSurge"]
        settings = load_settings(service, env=config)
        total += pods * (settings.db_pool_size + settings.db_max_overflow)
    assert total <= SERVER_MAX_CONNECTIONS - SUPERUSER_RESERVED - OPERATOR_HEADROOM, total


def test_images_are_pinned(rendered: tuple[str, Manifests]) -> None:
    name, manifests = rendered
    workloads = (
        manifests.of_kind("Deployment")
        + manifests.of_kind("StatefulSet")
        + manifests.of_kind("Job")
    )
    images = {c["image"] for w in workloads for c in w["spec"]["template"]["spec"]["containers"]}
    for image in images:
        repository, _, tag = image.rpartition(":")
        assert repository and re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9]+)?", tag), image
    if name == "production":
        assert PROJECT_VERSION is not None
        trinity = {i for i in images if "/trinity/" in i}
        assert len(trinity) == 6  # the four services, the executor, the console
        assert all(i.endswith(f":{PROJECT_VERSION.group(1)}") for i in trinity)
        namespace = manifests.of_kind("Namespace")[0]
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert {d["metadata"].get("namespace") for d in manifests.documents} == {
            None,  # the Namespace itself
            namespace["metadata"]["name"],
        }


def test_console_deployment(rendered: tuple[str, Manifests]) -> None:
    """Stateless replicas probed over HTTP, no database and no credentials of their own:
    only the services' token table (who may sign in) and the services' targets."""
    _, manifests = rendered
    deployment = manifests.get("Deployment", "trinity-console")
    assert deployment["spec"]["replicas"] >= 2
    c = container(deployment)
    assert c["image"].split("/")[-1].startswith("console:")
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "http"] == [7400]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    env = env_of(c)
    assert env["TRINITY_CONSOLE_LISTEN"]["value"] == "0.0.0.0:7400"
    assert env["TRINITY_CONSOLE_SECURE_COOKIE"]["value"] == "true"
    assert env["TRINITY_AUTH_TOKENS"]["valueFrom"]["secretKeyRef"]["name"] == "trinity-auth"
    assert not [name for name in env if name.endswith(("_DATABASE_URL", "_TOKEN"))]
    assert [e["configMapRef"]["name"] for e in c["envFrom"]] == ["trinity-config"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    svc = manifests.get("Service", "trinity-console")
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(7400, "http")]
    pdb = manifests.get("PodDisruptionBudget", "trinity-console")
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_production_mounts_the_certificates_from_a_secret(
    rendered: tuple[str, Manifests],
) -> None:
    """Production runs mutual TLS on every gRPC port: each Trinity pod mounts the Secret
    trinity-tls where the TLS settings point (issue 13 §5)."""
    name, manifests = rendered
    if name != "production":
        pytest.skip("the base runs plaintext gRPC (a development cluster)")
    config = manifests.get("ConfigMap", "trinity-config")["data"]
    tls = {k: v for k, v in config.items() if k.startswith("TRINITY_TLS_")}
    assert set(tls) == {
        "TRINITY_TLS_CERT_FILE",
        "TRINITY_TLS_KEY_FILE",
        "TRINITY_TLS_CLIENT_CA_FILE",
        "TRINITY_TLS_CA_FILE",
        "TRINITY_TLS_CLIENT_CERT_FILE",
        "TRINITY_TLS_CLIENT_KEY_FILE",
    }
    for component in (*SERVICES, "executor", "console"):
        deployment = manifests.get("Deployment", f"trinity-{component}")
        pod = deployment["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == "trinity-tls"
        (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == "tls"]
        assert mount["readOnly"] is True
        assert {Path(path).parent for path in tls.values()} == {Path(mount["mountPath"])}


def test_nats_cluster_shape(rendered: tuple[str, Manifests]) -> None:
    name, manifests = rendered
    nats = manifests.get("StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    c = container(nats)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"].startswith("/healthz")
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pdb = manifests.get("PodDisruptionBudget", "nats")
    assert pdb["spec"]["maxUnavailable"] == 1  # a quorum of 2 of 3 stays
    if name == "production":
        affinity = nats["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" in affinity
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in affinity


def test_every_kustomization_file_is_used() -> None:
    """No stray manifest under deploy/k8s that kustomize would silently leave out."""
    referenced: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        folder = kustomization.parent
        spec = yaml.safe_load(kustomization.read_text())
        referenced.add(kustomization)
        for entry in spec.get("resources", []):
            referenced.add((folder / entry).resolve())
        for patch in spec.get("patches", []):
            referenced.add((folder / patch["path"]).resolve())
        for generator in spec.get("configMapGenerator", []):
            for file in generator.get("files", []):
                referenced.add((folder / file.split("=")[-1]).resolve())
    files = {p.resolve() for p in K8S.rglob("*") if p.is_file()}
    assert files - referenced - {p.resolve() for p in K8S.rglob("kustomization.yaml")} == set()
