"""The JetStream part of the manifests: streams rendered from the one definition in
trinity_platform.streams, the NATS cluster configuration, and the provisioning Job's
script against a real three-server cluster started from that configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import yaml
from deploy_support import DEPLOY, K8S, Manifests

from trinity_platform.streams import stream_configs
from trinity_platform.testing.nats_server import find_nats_server
from trinity_platform.testing.ports import free_port, wait_for_port

NATS_CONF = K8S / "base" / "nats" / "nats.conf"
STREAMS_DIR = K8S / "base" / "nats" / "streams"
PROVISION = DEPLOY / "jetstream" / "provision.py"


def test_rendered_streams_are_the_code_definition(render_module: ModuleType) -> None:
    """Fails when streams.py and the committed manifests diverge (run deploy/render.py)."""
    assert render_module.stale(render_module.streams()) == []
    replicas = render_module.stream_replicas()
    for config in stream_configs(replicas):
        committed = json.loads((STREAMS_DIR / f"{config.name}.json").read_text())
        assert committed == json.loads(json.dumps(config.as_dict()))


def test_divergence_is_detected(provision_module: ModuleType, tmp_path: Path) -> None:
    """The comparison the test and the Job rely on does see a changed, missing or extra stream."""
    for name in os.listdir(STREAMS_DIR):
        shutil.copy(STREAMS_DIR / name, tmp_path / name)
    assert provision_module.differences(tmp_path, 3) == []
    assert provision_module.differences(tmp_path, 1) != []  # the replicas differ
    queue = tmp_path / "TRINITY_PROCESS_WORK_QUEUE.json"
    config = json.loads(queue.read_text())
    config["retention"] = "limits"
    queue.write_text(json.dumps(config))
    assert provision_module.differences(tmp_path, 3) == [
        "TRINITY_PROCESS_WORK_QUEUE.json: differs from the code's definition"
    ]
    queue.unlink()
    (tmp_path / "EXTRA.json").write_text("{}")
    assert len(provision_module.differences(tmp_path, 3)) == 2


def test_the_manifests_carry_the_rendering(rendered: tuple[str, Manifests]) -> None:
    """The kustomization ships exactly the rendered files; the Job verifies and applies them
    with the replicas the cluster has."""
    _, manifests = rendered
    streams = manifests.get("ConfigMap", "trinity-streams")
    expected = {p.name: p.read_text() for p in STREAMS_DIR.glob("*.json")}
    assert streams["data"] == expected
    config = manifests.get("ConfigMap", "trinity-config")["data"]
    nats = manifests.get("StatefulSet", "nats")
    replicas = int(config["TRINITY_STREAM_REPLICAS"])
    assert replicas == nats["spec"]["replicas"] == 3
    assert {json.loads(text)["num_replicas"] for text in expected.values()} == {replicas}

    job = manifests.get("Job", "trinity-streams")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["python", "/opt/trinity/share/provision.py"]
    expect_dir = container["command"][container["command"].index("--expect") + 1]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == expect_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == streams["metadata"]["name"]
    assert {"configMapRef": {"name": config_name(manifests)}} in container["envFrom"]
    # the script is in the image the Job runs
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert "deploy/jetstream/provision.py /opt/trinity/share/" in dockerfile


def config_name(manifests: Manifests) -> str:
    return str(manifests.get("ConfigMap", "trinity-config")["metadata"]["name"])


def test_nats_configuration_is_valid(rendered: tuple[str, Manifests]) -> None:
    """`nats-server -t` parses the cluster configuration the StatefulSet mounts."""
    _, manifests = rendered
    conf = manifests.get("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert conf == NATS_CONF.read_text()
    result = subprocess.run(
        [find_nats_server(), "-t", "-c", str(NATS_CONF)],
        env={**os.environ, "SERVER_NAME": "nats-0"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    nats = manifests.get("StatefulSet", "nats")
    routes = [line.strip() for line in conf.splitlines() if line.strip().startswith("nats://")]
    service = nats["spec"]["serviceName"]
    assert routes == [f"nats://nats-{n}.{service}:6222" for n in range(nats["spec"]["replicas"])]
    assert manifests.get("Service", service)["spec"]["clusterIP"] == "None"


def local_cluster_config(index: int, ports: list[dict[str, int]], root: Path) -> str:
    """nats.conf as the StatefulSet runs it, with loopback addresses and local folders."""
    text = NATS_CONF.read_text()
    mine = ports[index]
    replacements = {
        "listen: 0.0.0.0:4222": f"listen: 127.0.0.1:{mine['client']}",
        "http: 0.0.0.0:8222": f"http: 127.0.0.1:{mine['http']}",
        "listen: 0.0.0.0:6222": f"listen: 127.0.0.1:{mine['cluster']}",
        "pid_file: /var/run/nats/nats.pid": f"pid_file: {root / f'nats-{index}.pid'}",
        "store_dir: /data": f"store_dir: {root / f'store-{index}'}",
    }
    for n, peer in enumerate(ports):
        replacements[f"nats://nats-{n}.nats-headless:6222"] = f"nats://127.0.0.1:{peer['cluster']}"
    for old, new in replacements.items():
        assert old in text, f"nats.conf no longer has {old!r}; update this test"
        text = text.replace(old, new)
    return text


def test_provisioning_job_creates_replicated_streams_on_a_three_server_cluster(
    tmp_path: Path,
    processes: Callable[..., subprocess.Popen[bytes]],
    provision_module: ModuleType,
) -> None:
    ports = [{"client": free_port(), "http": free_port(), "cluster": free_port()} for _ in range(3)]
    for index in range(3):
        conf = tmp_path / f"nats-{index}.conf"
        conf.write_text(local_cluster_config(index, ports, tmp_path))
        log = (tmp_path / f"nats-{index}.log").open("wb")
        processes(
            [find_nats_server(), "-c", str(conf)],
            env={**os.environ, "SERVER_NAME": f"nats-{index}"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for port in ports:
        wait_for_port("127.0.0.1", port["client"], 15)

    env = {
        **os.environ,
        "TRINITY_NATS_URL": ",".join(f"nats://127.0.0.1:{p['client']}" for p in ports),
        "TRINITY_STREAM_REPLICAS": "3",
    }

    def provision(expect: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(PROVISION), "--expect", str(expect), "--timeout", "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = provision(STREAMS_DIR)
    assert first.returncode == 0, first.stdout + first.stderr
    report = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert {r["stream"] for r in report} == {c.name for c in stream_configs(3)}
    assert all(r["replicas"] == 3 and r["peers"] == 3 and r["leader"] for r in report), report
    queue = next(r for r in report if r["stream"] == "TRINITY_PROCESS_WORK_QUEUE")
    assert queue["retention"] == "workqueue"

    again = provision(STREAMS_DIR)  # idempotent, as every service start is
    assert again.returncode == 0, again.stdout + again.stderr

    stale = tmp_path / "stale-manifests"
    stale.mkdir()
    for name, text in provision_module.rendered(1).items():  # rendered for another cluster
        (stale / name).write_text(text)
    refused = provision(stale)
    assert refused.returncode == 3
    assert "differ from this image's code" in refused.stderr


def test_streams_job_and_kustomization_list_the_same_files() -> None:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (generator,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "trinity-streams"
    ]
    listed = sorted(Path(f).name for f in generator["files"])
    assert listed == sorted(f"{c.name}.json" for c in stream_configs(3))
