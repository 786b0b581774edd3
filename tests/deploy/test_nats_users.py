"""The manifests run NATS with the broker permissions of authorization.conf: the
StatefulSet gets every user's password from the Secret trinity-nats-users, and every
process that connects to NATS does so as its own user with its own password from that
Secret (the console does not connect to NATS). The broker side of these users is
tested in test_nats_permissions.py; the cluster running with them in test_jetstream.py."""

from __future__ import annotations

import re
from typing import Any

from deploy_support import K8S, Manifests

AUTHORIZATION = K8S / "base" / "nats" / "authorization.conf"
USERS_SECRET = "trinity-nats-users"
# Who connects to NATS as whom. The console only calls the services' gRPC APIs.
NATS_CLIENTS = {
    ("Deployment", "trinity-definition"): "definition",
    ("Deployment", "trinity-execution"): "execution",
    ("Deployment", "trinity-approval"): "approval",
    ("Deployment", "trinity-work"): "work",
    ("Deployment", "trinity-executor"): "executor",
    ("Job", "trinity-streams"): "provisioner",
}
NOT_NATS_CLIENTS = {("Deployment", "trinity-console")}


def authorization_users() -> dict[str, str]:
    """``{user: password variable}`` as authorization.conf declares them."""
    text = AUTHORIZATION.read_text()
    pairs = re.findall(r"^\s*user:\s*(\w+)\s*\n\s*password:\s*\$(\w+)\s*$", text, re.MULTILINE)
    assert len(pairs) == text.count("password:"), "every user has a password variable"
    return dict(pairs)


def container_env(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container.get("env", [])}


def from_users_secret(variable: dict[str, Any]) -> str:
    """The key of trinity-nats-users the variable reads (required, never a literal)."""
    assert "value" not in variable, variable
    ref = variable["valueFrom"]["secretKeyRef"]
    assert ref["name"] == USERS_SECRET, variable
    assert not ref.get("optional", False), variable  # no password, no start
    return str(ref["key"])


def test_authorization_declares_each_user_with_its_own_variable() -> None:
    users = authorization_users()
    assert set(users) == {*NATS_CLIENTS.values(), "subscriber"}
    assert users == {user: f"TRINITY_NATS_{user.upper()}_PASSWORD" for user in users}
    # Anonymous clients are refused: no default user for clients without credentials.
    settings = [line for line in AUTHORIZATION.read_text().splitlines() if "#" not in line]
    assert not [line for line in settings if "no_auth_user" in line]


def test_the_nats_servers_get_every_password_from_the_secret(
    rendered: tuple[str, Manifests],
) -> None:
    """Each user's password, and the routes' (servers authenticate each other: a route
    connection bypasses the clients' permissions), from trinity-nats-users."""
    _, manifests = rendered
    env = container_env(manifests.get("StatefulSet", "nats"))
    for user, variable in authorization_users().items():
        assert variable in env, variable
        assert from_users_secret(env[variable]) == user
    assert from_users_secret(env["TRINITY_NATS_ROUTE_PASSWORD"]) == "route"
    # every variable the configuration reads is set (the route URLs are checked with
    # nats-server in test_jetstream.py)
    mounted = manifests.get("ConfigMap", "nats-config")["data"]
    settings = [line.split("#")[0] for text in mounted.values() for line in text.splitlines()]
    referenced = set(re.findall(r"(?<![\"\w])\$(\w+)", "\n".join(settings)))
    assert "TRINITY_NATS_APPROVAL_PASSWORD" in referenced
    assert referenced <= set(env), referenced - set(env)
    cluster = mounted["nats.conf"][mounted["nats.conf"].index("cluster {") :]
    assert re.search(r"authorization\s*\{\s*user:\s*route\s*,?\s*password:", cluster)


def test_the_nats_servers_include_the_authorization(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    config = manifests.get("ConfigMap", "nats-config")["data"]
    assert config["authorization.conf"] == AUTHORIZATION.read_text()
    includes = re.findall(r"^include\s+(\S+)\s*$", config["nats.conf"], re.MULTILINE)
    assert includes == ["authorization.conf"]


def test_every_nats_client_connects_as_its_own_user(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    workloads = {
        (d["kind"], d["metadata"]["name"]): d
        for d in manifests.of_kind("Deployment") + manifests.of_kind("Job")
    }
    # A new workload must be classified here (it connects to NATS or it does not).
    assert set(workloads) == set(NATS_CLIENTS) | NOT_NATS_CLIENTS
    for key, user in NATS_CLIENTS.items():
        env = container_env(workloads[key])
        assert env["TRINITY_NATS_USER"] == {"name": "TRINITY_NATS_USER", "value": user}, key
        assert from_users_secret(env["TRINITY_NATS_PASSWORD"]) == user, key
    for key in NOT_NATS_CLIENTS:
        assert not [name for name in container_env(workloads[key]) if "NATS" in name], key
