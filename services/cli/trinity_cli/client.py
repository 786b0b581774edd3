"""gRPC stubs of the four services, with deadlines, the bearer token and one-line errors."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceStub
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_cli.errors import from_rpc_error
from trinity_platform.channels import open_blocking_channel
from trinity_platform.config import DEFAULT_NATS_URL, DEFAULT_PORTS
from trinity_platform.tls import ClientTls, client_tls_from_env

SERVICES = ("definition", "execution", "approval", "work")
_STUBS: dict[str, Any] = {
    "definition": DefinitionServiceStub,
    "execution": ExecutionServiceStub,
    "approval": ApprovalServiceStub,
    "work": WorkServiceStub,
}


def target_env(service: str) -> str:
    return f"TRINITY_{service.upper()}_TARGET"


def default_target(service: str, env: Mapping[str, str] | None = None) -> str:
    """``TRINITY_<SERVICE>_TARGET``, else ``127.0.0.1:<default port>``."""
    env = os.environ if env is None else env
    return env.get(target_env(service)) or f"127.0.0.1:{DEFAULT_PORTS[service]}"


def whoami() -> str:
    """Who the caller says they are where no token proves it (``created_by``, ``triggered_by``)."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def default_nats_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("TRINITY_NATS_URL") or DEFAULT_NATS_URL


@dataclass
class Clients:
    """Lazily opened channels; every call gets a deadline and the caller's token."""

    targets: Mapping[str, str]
    token: str = ""
    timeout: float = 10.0
    # TLS from TRINITY_TLS_CA_FILE (and a client certificate for mutual TLS).
    tls: ClientTls | None = field(default_factory=client_tls_from_env)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict, init=False)

    def _stub(self, service: str) -> Any:
        channel = self._channels.get(service)
        if channel is None:
            channel = open_blocking_channel(self.targets[service], tls=self.tls)
            self._channels[service] = channel
        return _STUBS[service](channel)

    def claimed_by(self) -> str:
        """What a "who did this" field says: nothing with a token (the services record the
        token's principal and refuse a body naming anyone else), else :func:`whoami`."""
        return "" if self.token else whoami()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def call(self, service: str, method: str, request: Any) -> Any:
        """``service.method(request)``; a failure raises :class:`~trinity_cli.errors.CliError`."""
        rpc = getattr(self._stub(service), method)
        try:
            return rpc(request, timeout=self.timeout, metadata=self.metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error, service, self.targets[service], method) from None

    def stream(
        self, service: str, method: str, request: Any, timeout: float | None = None
    ) -> Iterator[Any]:
        """A server stream; by default without a deadline (it lasts as long as what it follows)."""
        rpc = getattr(self._stub(service), method)
        try:
            yield from rpc(request, timeout=timeout, metadata=self.metadata())
        except grpc.RpcError as error:
            raise from_rpc_error(error, service, self.targets[service], method) from None

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
