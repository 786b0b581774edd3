"""The console's gRPC side against a real server over loopback, with TLS: the person's
token goes with each call, and a refusal comes back as a ServiceError that says it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import trustme
from grpc import aio

from trinity.process.execution.v1 import execution_pb2
from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity.process.execution.v1.execution_service_pb2_grpc import (
    ExecutionServiceServicer,
    add_ExecutionServiceServicer_to_server,
)
from trinity_console.backend import Backend, ServiceError
from trinity_platform.grpc_server import GrpcServerHandle, ServiceRegistration, build_server
from trinity_platform.tls import ClientTls, ServerTls


class Echo(ExecutionServiceServicer):
    """Answers GetExecution with the authorization it saw; refuses "secret"."""

    async def GetExecution(
        self, request: api.GetExecutionRequest, context: aio.ServicerContext
    ) -> api.GetExecutionResponse:
        if request.execution_id == "secret":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
        seen = dict(context.invocation_metadata() or ()).get("authorization", "")
        return api.GetExecutionResponse(
            execution=execution_pb2.Execution(id=request.execution_id, triggered_by=str(seen))
        )


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[GrpcServerHandle, bytes]]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    handle = build_server(
        "127.0.0.1:0",
        [
            ServiceRegistration(
                "trinity.process.execution.v1.ExecutionService",
                add_ExecutionServiceServicer_to_server,
                Echo(),
            )
        ],
        tls=ServerTls(cert=cert.cert_chain_pems[0].bytes(), key=cert.private_key_pem.bytes()),
    )
    await handle.start()
    await handle.mark_serving()
    yield handle, ca.cert_pem.bytes()
    await handle.stop(0)


async def test_calls_carry_each_persons_token_over_tls(
    tls_server: tuple[GrpcServerHandle, bytes],
) -> None:
    handle, ca = tls_server
    backend = Backend(
        {"execution": f"localhost:{handle.port}"},
        tls=ClientTls(ca=ca),
    )
    try:
        request = api.GetExecutionRequest(execution_id="e1")
        first: Any = await backend.call("execution", "GetExecution", request, "token-a")
        second: Any = await backend.call("execution", "GetExecution", request, "token-b")
        anonymous: Any = await backend.call("execution", "GetExecution", request, "")
        assert first.execution.triggered_by == "Bearer token-a"
        assert second.execution.triggered_by == "Bearer token-b"
        assert anonymous.execution.triggered_by == ""
        with pytest.raises(ServiceError) as refused:
            await backend.call(
                "execution", "GetExecution", api.GetExecutionRequest(execution_id="secret"), "t"
            )
        assert (refused.value.status, refused.value.http_status) == ("PERMISSION_DENIED", 403)
        assert refused.value.message == "not yours"
    finally:
        await backend.close()


async def test_an_unreachable_service_is_a_service_error_that_names_it() -> None:
    backend = Backend({"execution": "127.0.0.1:1"}, timeout=2.0)
    try:
        with pytest.raises(ServiceError) as failed:
            await backend.call("execution", "GetExecution", api.GetExecutionRequest(), "")
        assert failed.value.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        assert "execution service at 127.0.0.1:1" in failed.value.message
    finally:
        await backend.close()
