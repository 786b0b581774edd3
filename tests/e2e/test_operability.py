"""What an operator sees with grpcurl: reflection and health on every service."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
SERVICE_NAMES = {
    "definition": "trinity.process.definition.v1.DefinitionService",
    "execution": "trinity.process.execution.v1.ExecutionService",
    "approval": "trinity.process.approval.v1.ApprovalService",
    "work": "trinity.process.work.v1.WorkService",
}


def grpcurl(*args: str) -> str:
    done = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("suite_database", ["sqlite"], indirect=True)
async def test_grpcurl_lists_service_health_and_reflection_on_every_port(make_suite) -> None:  # type: ignore[no-untyped-def]
    suite = make_suite(executors=0)
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)
    for service, name in SERVICE_NAMES.items():
        address = f"127.0.0.1:{suite.ports[service]}"
        listed = set(grpcurl(address, "list").split())
        assert {name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed
        assert '"SERVING"' in grpcurl(address, "grpc.health.v1.Health/Check")
        # Reflection carries the full contract: a client can describe every method.
        assert "rpc " in grpcurl(address, "describe", name)
