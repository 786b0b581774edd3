"""The services as the console reaches them: gRPC calls made in the person's name.

Every call carries the signed-in person's bearer token (never one of the console's
own) and a deadline; a refusal becomes a :class:`ServiceError` that the pages show
as it is (status, reason, message), so PERMISSION_DENIED reads as such.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc

from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceStub
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity_platform.channels import open_channel
from trinity_platform.grpc_errors import error_details, rpc_status_of
from trinity_platform.tls import ClientTls

_STUBS: dict[str, Any] = {
    "definition": DefinitionServiceStub,
    "execution": ExecutionServiceStub,
    "approval": ApprovalServiceStub,
}
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ServiceError(Exception):
    """A service refused a call, or could not be reached."""

    def __init__(self, status: str, message: str, reason: str = "", service: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason
        self.service = service

    @property
    def http_status(self) -> int:
        return {
            "UNAUTHENTICATED": 401,
            "PERMISSION_DENIED": 403,
            "NOT_FOUND": 404,
            "INVALID_ARGUMENT": 400,
            "FAILED_PRECONDITION": 409,
            "ABORTED": 409,
            "RESOURCE_EXHAUSTED": 429,
        }.get(self.status, 502)

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason, "message": self.message}


def service_error(error: grpc.RpcError, service: str, target: str) -> ServiceError:
    code: grpc.StatusCode = error.code()
    details = (error.details() or "").strip()
    reason, violations = error_details(error)
    if code in _UNREACHABLE and rpc_status_of(error) is None:
        details = f"the {service} service at {target} did not answer ({details or code.name})"
    if violations:
        details += " [" + "; ".join(f"{v.field}: {v.description}" for v in violations) + "]"
    return ServiceError(code.name, details or code.name, reason or "", service)


class Backend:
    """One channel per service (the platform's: every replica, health-checked, TLS when
    configured), shared by every person's calls; the token goes with each call."""

    def __init__(
        self, targets: Mapping[str, str], timeout: float = 10.0, tls: ClientTls | None = None
    ) -> None:
        self._targets = dict(targets)
        self._timeout = timeout
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, service: str) -> Any:
        channel = self._channels.get(service)
        if channel is None:
            channel = open_channel(self._targets[service], tls=self._tls)
            self._channels[service] = channel
        return _STUBS[service](channel)

    @staticmethod
    def _metadata(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),) if token else ()

    async def call(self, service: str, method: str, request: Any, token: str) -> Any:
        """``service.method(request)`` as the holder of ``token``."""
        rpc = getattr(self._stub(service), method)
        try:
            return await rpc(request, timeout=self._timeout, metadata=self._metadata(token))
        except grpc.RpcError as error:
            raise service_error(error, service, self._targets[service]) from None

    async def stream(
        self, service: str, method: str, request: Any, token: str
    ) -> AsyncIterator[Any]:
        """A server stream, without a deadline (it lasts as long as what it follows)."""
        call = getattr(self._stub(service), method)(request, metadata=self._metadata(token))
        try:
            async for item in call:
                yield item
        except grpc.RpcError as error:
            raise service_error(error, service, self._targets[service]) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
