"""Issue 13 §5: the whole suite with mutual TLS on every gRPC port (certificates made
at run time with trustme). The services call each other, the executor reports and the
CLI runs a process, all over TLS with client certificates; a caller without a client
certificate, or in plaintext, is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trinity_cli.app import run as cli
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.channels import PROBE_OPTIONS, open_blocking_channel
from trinity_platform.testing.ports import free_port
from trinity_platform.testing.tls import write_certificates
from trinity_platform.tls import client_tls_from_env

pytestmark = pytest.mark.e2e

PROCESS = """
name: hello-tls
steps:
  - id: greet
    agent_task: {agent: echo, message: "Hello over TLS"}
"""


@pytest.fixture
def tls_env(tmp_path: Path) -> dict[str, str]:
    return write_certificates(tmp_path / "tls")


@pytest.fixture
def suite(tmp_path: Path, nats_url: str, tls_env: dict[str, str]) -> Iterator[LocalSuite]:
    local = LocalSuite(
        data_dir=tmp_path / "data",
        nats_url=nats_url,
        ports={service: free_port() for service in SERVICES},
        executors=1,
        extra_env=tls_env,
    )
    try:
        local.start()
        local.wait_healthy(90)
        yield local
    finally:
        local.stop()


def health(target: str, env: dict[str, str]) -> int:
    with open_blocking_channel(
        target, tls=client_tls_from_env(env), options=PROBE_OPTIONS
    ) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(reply.status)


def test_the_suite_runs_over_mutual_tls(
    suite: LocalSuite,
    tls_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in tls_env.items():
        monkeypatch.setenv(name, value)
    for service in SERVICES:
        monkeypatch.setenv(f"TRINITY_{service.upper()}_TARGET", f"127.0.0.1:{suite.ports[service]}")
    process = tmp_path / "hello.yaml"
    process.write_text(PROCESS)

    # The CLI (TLS from the environment) publishes and runs; the run completing means
    # execution reached definition and work, and the executor reported to work, over TLS.
    assert cli(["definitions", "apply", str(process), "--publish"]) == 0
    assert cli(["run", "hello-tls", "--wait", "--timeout", "60"]) == 0, suite.log_tail("execution")
    assert "completed" in capsys.readouterr().out

    target = f"127.0.0.1:{suite.ports['execution']}"
    assert health(target, tls_env) == health_pb2.HealthCheckResponse.SERVING
    # Without a client certificate, or in plaintext, nothing gets through.
    without_cert = {"TRINITY_TLS_CA_FILE": tls_env["TRINITY_TLS_CA_FILE"]}
    for env in (without_cert, {}):
        with pytest.raises(grpc.RpcError) as refused:
            health(target, env)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    monkeypatch.delenv("TRINITY_TLS_CLIENT_CERT_FILE")
    monkeypatch.delenv("TRINITY_TLS_CLIENT_KEY_FILE")
    assert cli(["definitions", "list"]) == 3  # UNREACHABLE: the handshake is refused
