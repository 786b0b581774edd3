"""The JetStream part of the manifests: streams rendered from the one definition in
trinity_platform.streams, the NATS cluster configuration, and the provisioning Job's
script against a real three-server cluster started from that configuration."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import nats
import pytest
import yaml
from deploy_support import DEPLOY, K8S, Manifests

from trinity_platform.nats_connect import NatsSecurity
from trinity_platform.streams import stream_configs
from trinity_platform.subjects import fact_subject, facts_stream
from trinity_platform.testing.nats_server import find_nats_server
from trinity_platform.testing.ports import free_port, wait_for_port

NATS_CONF = K8S / "base" / "nats" / "nats.conf"
AUTHORIZATION = K8S / "base" / "nats" / "authorization.conf"
NATS_STATEFULSET = K8S / "base" / "nats" / "statefulset.yaml"
STREAMS_JOB = K8S / "base" / "nats" / "streams-job.yaml"
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


def nats_secret(statefulset: dict[str, Any]) -> dict[str, str]:
    """A generated password for every key of the Secret the NATS servers read (letters
    and digits, as the README's command makes them)."""
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    sources = [e.get("valueFrom", {}) for e in container["env"]]
    keys = [s["secretKeyRef"]["key"] for s in sources if "secretKeyRef" in s]
    return {key: "p" + secrets.token_hex(16) for key in keys}


def server_env(statefulset: dict[str, Any], secret: dict[str, str], pod: str) -> dict[str, str]:
    """The NATS container's environment as Kubernetes builds it: values with $(VAR)
    expanded from the variables before them, Secret keys, the pod's name."""
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for variable in container["env"]:
        source = variable.get("valueFrom", {})
        if "value" in variable:
            expand = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], variable["value"])
            env[variable["name"]] = expand
        elif "secretKeyRef" in source:
            env[variable["name"]] = secret[source["secretKeyRef"]["key"]]
        else:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", variable
            env[variable["name"]] = pod
    return env


def test_nats_configuration_is_valid(rendered: tuple[str, Manifests], tmp_path: Path) -> None:
    """`nats-server -t` parses the cluster configuration the StatefulSet mounts, with the
    authorization it includes and the environment the StatefulSet gives it."""
    _, manifests = rendered
    data = manifests.get("ConfigMap", "nats-config")["data"]
    conf = data["nats.conf"]
    assert conf == NATS_CONF.read_text()
    assert data["authorization.conf"] == AUTHORIZATION.read_text()
    for name, text in data.items():  # the ConfigMap as the pods see it mounted
        (tmp_path / name).write_text(text)
    nats = manifests.get("StatefulSet", "nats")

    def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [find_nats_server(), "-t", "-c", str(tmp_path / "nats.conf")],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )

    env = server_env(nats, nats_secret(nats), "nats-0")
    result = check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    # the include is read: without the Secret's variables the server refuses to start
    missing = check({"SERVER_NAME": "nats-0"})
    assert missing.returncode != 0
    assert "TRINITY_NATS_" in missing.stdout + missing.stderr
    # Routes to every server, carrying the route password (the route port is
    # authenticated too: a route connection bypasses the clients' permissions).
    (routes,) = re.findall(r"^\s*routes:\s*\[([^\]]*)\]", conf, re.MULTILINE)
    variables = [v.strip().lstrip("$") for v in routes.split(",")]
    service = nats["spec"]["serviceName"]
    password = env["TRINITY_NATS_ROUTE_PASSWORD"]
    assert [env[v] for v in variables] == [
        f"nats://route:{password}@nats-{n}.{service}:6222" for n in range(nats["spec"]["replicas"])
    ]
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
    for old, new in replacements.items():
        assert old in text, f"nats.conf no longer has {old!r}; update this test"
        text = text.replace(old, new)
    return text


def local_server_env(
    statefulset: dict[str, Any], secret: dict[str, str], index: int, ports: list[dict[str, int]]
) -> dict[str, str]:
    """The StatefulSet's environment for server ``index``, routes to loopback ports."""
    env = server_env(statefulset, secret, f"nats-{index}")
    for name, value in env.items():
        for n, peer in enumerate(ports):
            value = value.replace(f"@nats-{n}.nats-headless:6222", f"@127.0.0.1:{peer['cluster']}")
        env[name] = value
    return env


def test_provisioning_job_creates_replicated_streams_on_a_three_server_cluster(
    tmp_path: Path,
    processes: Callable[..., subprocess.Popen[bytes]],
    provision_module: ModuleType,
) -> None:
    """The cluster runs with the authorization the manifests ship (passwords as the
    StatefulSet gets them) and the Job connects with its own identity."""
    ports = [{"client": free_port(), "http": free_port(), "cluster": free_port()} for _ in range(3)]
    shutil.copy(AUTHORIZATION, tmp_path / AUTHORIZATION.name)  # included by nats.conf
    (statefulset,) = [
        d for d in yaml.safe_load_all(NATS_STATEFULSET.read_text()) if d["kind"] == "StatefulSet"
    ]
    secret = nats_secret(statefulset)
    for index in range(3):
        conf = tmp_path / f"nats-{index}.conf"
        conf.write_text(local_cluster_config(index, ports, tmp_path))
        log = (tmp_path / f"nats-{index}.log").open("wb")
        processes(
            [find_nats_server(), "-c", str(conf)],
            env={**os.environ, **local_server_env(statefulset, secret, index, ports)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for port in ports:
        wait_for_port("127.0.0.1", port["client"], 15)

    def password(user: str) -> str:
        return secret[user]

    (job_container,) = yaml.safe_load(STREAMS_JOB.read_text())["spec"]["template"]["spec"][
        "containers"
    ]
    job_env = {e["name"]: e for e in job_container["env"]}
    job_user = job_env["TRINITY_NATS_USER"]["value"]
    assert job_env["TRINITY_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == job_user
    url = ",".join(f"nats://127.0.0.1:{p['client']}" for p in ports)
    anonymous_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRINITY_NATS_")},
        "TRINITY_NATS_URL": url,
        "TRINITY_STREAM_REPLICAS": "3",
    }
    env = {
        **anonymous_env,
        "TRINITY_NATS_USER": job_user,
        "TRINITY_NATS_PASSWORD": password(job_user),
    }

    def provision(expect: Path, env: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(PROVISION), "--expect", str(expect), "--timeout", "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    anonymous = provision(STREAMS_DIR, anonymous_env)
    assert anonymous.returncode == 2, anonymous.stdout + anonymous.stderr
    assert "authorization" in anonymous.stderr.lower()

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

    asyncio.run(only_owners_on_the_cluster(ports, job_user, password))
    for port in ports:  # nor does anyone join as a server without the route password
        assert anonymous_route(port["cluster"]).startswith("-ERR 'Authorization Violation'")


def anonymous_route(port: int) -> str:
    """What a server answers a route connection without credentials (the route
    protocol: INFO from the server, CONNECT from the route)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as route:
        reader = route.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        connect = {"name": "mallory", "cluster": "trinity", "headers": True, "verbose": False}
        route.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        return reader.readline().decode()


async def only_owners_on_the_cluster(
    ports: list[dict[str, int]], job_user: str, password: Callable[[str], str]
) -> None:
    """Every server refuses anonymous clients; the Job's user publishes no fact; a
    service's fact reaches its replicated stream and the subscriber reads it."""
    servers = [f"nats://127.0.0.1:{p['client']}" for p in ports]
    for server in servers:
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(server, allow_reconnect=False, connect_timeout=2)

    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    async def connect(user: str) -> Any:
        security = NatsSecurity(user=user, password=password(user))
        return await nats.connect(
            servers, error_cb=on_error, allow_reconnect=False, **security.connect_options()
        )

    provisioner = await connect(job_user)
    subject = fact_subject("definition", "DefinitionPublished")
    with pytest.raises(Exception):  # noqa: B017 - no ack: the broker drops it
        await provisioner.jetstream(timeout=1).publish(subject, b"forged")
    await wait_for(lambda: any("permissions violation" in str(e).lower() for e in errors))
    definition = await connect("definition")
    ack = await definition.jetstream(timeout=5).publish(subject, b"owned")
    reader = await connect("subscriber")
    message = await reader.jetstream(timeout=5).get_msg(facts_stream("definition"), ack.seq)
    assert message.data == b"owned"
    info = await reader.jetstream(timeout=5).stream_info(facts_stream("definition"))
    assert info.state.messages == 1  # the forged one never landed
    for nc in (provisioner, definition, reader):
        await nc.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """The broker reports a violation asynchronously; poll for it, never sleep blindly."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.02)


def test_provisioning_gives_up_on_unreachable_nats(tmp_path: Path) -> None:
    """Exit 2 once --timeout has passed, never a Job hanging in the NATS client's retries."""
    env = {**os.environ, "TRINITY_NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, str(PROVISION), "--timeout", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unreachable" in result.stderr


def test_streams_job_and_kustomization_list_the_same_files() -> None:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (generator,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "trinity-streams"
    ]
    listed = sorted(Path(f).name for f in generator["files"])
    assert listed == sorted(f"{c.name}.json" for c in stream_configs(3))
