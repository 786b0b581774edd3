"""The TypeScript client end to end: `npm ci` from the committed lock, the generated
code checked against a fresh `buf generate`, `tsc`, and the Node.js program publishing,
triggering and following a process on the Python services (LocalSuite: free ports, a
private NATS), over gRPC with mutual TLS (certificates made at run time) and a bearer
token; without its client certificate it is refused."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from deploy_support import BIN, ROOT

from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.channels import open_blocking_channel
from trinity_platform.testing.ports import free_port
from trinity_platform.testing.stubs import bearer
from trinity_platform.testing.tls import write_certificates
from trinity_platform.tls import client_tls_from_env

pytestmark = pytest.mark.e2e

CLIENT = ROOT / "clients" / "typescript"
TOKEN, PRINCIPAL = "ts-client-token", "typescript@example.com"


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("npm")
    if executable is None:
        pytest.skip("npm is not installed; the TypeScript client is not tested")
    return subprocess.run(
        [executable, *args], cwd=CLIENT, capture_output=True, text=True, timeout=timeout
    )


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def prepare_client(tmp_path: Path) -> None:
    """npm ci, generated code up to date, tsc build (into dist/)."""
    installed = npm("ci", "--no-audit", "--no-fund")
    assert installed.returncode == 0, installed.stdout + installed.stderr

    fresh = tmp_path / "generated"
    generated = subprocess.run(
        [
            str(BIN / "buf"),
            "generate",
            str(ROOT),
            "--template",
            "buf.gen.ts.yaml",
            "-o",
            str(fresh),
        ],
        cwd=CLIENT,
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stderr
    committed, regenerated = CLIENT / "src" / "gen", fresh / "src" / "gen"
    assert tree(regenerated) == tree(committed), "run `npm run generate` in clients/typescript"
    drift = [
        name
        for name in sorted(tree(committed))
        if not filecmp.cmp(committed / name, regenerated / name, shallow=False)
    ]
    assert drift == [], f"generated code drifted (run `npm run generate`): {drift}"

    built = npm("run", "build")
    assert built.returncode == 0, built.stdout + built.stderr


def test_node_program_publishes_triggers_and_completes(tmp_path: Path, nats_url: str) -> None:
    tls_env = write_certificates(tmp_path / "tls")
    suite = LocalSuite(
        data_dir=tmp_path / "data",
        nats_url=nats_url,
        ports={service: free_port() for service in SERVICES},
        extra_env={
            "TRINITY_AUTH_TOKENS": f"{TOKEN}={PRINCIPAL}:author+operator+viewer",
            **tls_env,
        },
    )
    tls = client_tls_from_env(tls_env)
    try:
        suite.start()  # the services start while npm and tsc work
        prepare_client(tmp_path)
        suite.wait_healthy(120)

        name = f"typescript-e2e-{time.monotonic_ns()}"
        env = {
            "PATH": str(Path(shutil.which("node") or "node").parent),
            "TRINITY_DEFINITION_TARGET": f"127.0.0.1:{suite.ports['definition']}",
            "TRINITY_EXECUTION_TARGET": f"127.0.0.1:{suite.ports['execution']}",
            "TRINITY_TOKEN": TOKEN,
            "TRINITY_TIMEOUT_MS": "60000",
            "TRINITY_TLS_CA_FILE": tls_env["TRINITY_TLS_CA_FILE"],
            "TRINITY_TLS_CLIENT_CERT_FILE": tls_env["TRINITY_TLS_CLIENT_CERT_FILE"],
            "TRINITY_TLS_CLIENT_KEY_FILE": tls_env["TRINITY_TLS_CLIENT_KEY_FILE"],
        }
        run = subprocess.run(
            ["node", "dist/run-process.js", name],
            cwd=CLIENT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr + suite.log_tail("execution")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["status"] == "COMPLETED"
        assert result["steps"] == {
            "greet": {"status": "COMPLETED", "output": "Hello, TypeScript!"},
            "repeat": {"status": "COMPLETED", "output": "Hello, TypeScript! (via TypeScript)"},
        }
        # the facts arrived over the server stream, in order
        assert result["facts"][0] == "trinity.process.execution.v1.ProcessStarted"
        assert result["facts"][-1] == "trinity.process.execution.v1.ProcessCompleted"
        assert result["facts"].count("trinity.process.execution.v1.StepCompleted") == 2
        assert "unknown process refused: NotFound (no published process named" in run.stderr
        assert f"published {name} 1.0" in run.stderr
        assert "google.rpc.ErrorInfo" in run.stderr

        # the Python side agrees, and saw the TypeScript client's bearer token
        with open_blocking_channel(f"127.0.0.1:{suite.ports['execution']}", tls=tls) as channel:
            execution = (
                ExecutionServiceStub(channel)
                .GetExecution(
                    execution_service_pb2.GetExecutionRequest(execution_id=result["executionId"]),
                    timeout=10,
                    metadata=bearer(TOKEN),
                )
                .execution
            )
        assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
        assert execution.process_name == name
        assert execution.triggered_by == PRINCIPAL
        with open_blocking_channel(f"127.0.0.1:{suite.ports['definition']}", tls=tls) as channel:
            definition = (
                DefinitionServiceStub(channel)
                .GetDefinition(
                    definition_service_pb2.GetDefinitionRequest(
                        by_name=definition_service_pb2.NameSelector(name=name)
                    ),
                    timeout=10,
                    metadata=bearer(TOKEN),
                )
                .definition
            )
        assert definition.created_by == PRINCIPAL
        assert definition.version == result["processVersion"]

        # the same content again is not a new version
        again = subprocess.run(
            ["node", "dist/run-process.js", name],
            cwd=CLIENT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{name} 1.0 is already published with this content" in again.stderr
        assert json.loads(again.stdout.strip().splitlines()[-1])["processVersion"] == "1.0"

        # a wrong token is refused, so the header really is sent and checked
        refused = subprocess.run(
            ["node", "dist/run-process.js", name],
            cwd=CLIENT,
            env={**env, "TRINITY_TOKEN": "not-a-token"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert "Unauthenticated" in refused.stderr

        # without its client certificate the TLS handshake is refused
        no_cert = {k: v for k, v in env.items() if not k.startswith("TRINITY_TLS_CLIENT_")}
        anonymous = subprocess.run(
            ["node", "dist/run-process.js", name],
            cwd=CLIENT,
            env=no_cert,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert anonymous.returncode == 1
        assert "Unauthenticated" not in anonymous.stderr, anonymous.stderr
    finally:
        suite.stop()
