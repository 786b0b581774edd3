"""A grpc.aio server with reflection and the standard health service.

Health reports NOT_SERVING (overall ``""`` and each service) from ``start()`` until
``mark_serving()``; ``stop()`` flips it back to NOT_SERVING first, then drains calls.

A port is never shared: gRPC would set SO_REUSEPORT and let a second instance listen
beside the first without a word, so the server turns it off, and
:func:`check_listen_address` refuses a port in use in one line before anything starts.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from trinity_platform.channels import SERVER_KEEPALIVE_OPTIONS
from trinity_platform.tls import ServerTls

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ServiceRegistration:
    """``name`` is the full proto service name (``trinity.process.work.v1.WorkService``);
    ``add_to_server`` the generated ``add_<Service>Servicer_to_server``."""

    name: str
    add_to_server: Callable[[Any, Any], None]
    servicer: object


class ListenError(RuntimeError):
    """The listen address cannot be bound (in use, or not an address of this host)."""


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ListenError(f"cannot listen on {listen!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_listen_address(listen: str, setting: str = "") -> None:
    """Raise :class:`ListenError` (one line, naming the port) when ``listen`` is taken;
    ``setting`` names the variable that chooses another address.

    Binds and releases each address the host resolves to, with SO_REUSEADDR as gRPC
    does (a TIME_WAIT left by an earlier run is no obstacle) and without SO_REUSEPORT.
    """
    host, port = _split_listen(listen)
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ListenError(f"cannot listen on {listen}: {error.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ListenError(
                        f"port {port} is already in use ({listen}): is another instance "
                        f"running? Stop it, or choose another address"
                        + (f" with {setting}" if setting else "")
                    ) from None
                if error.errno != errno.EADDRNOTAVAIL:  # e.g. ::1 on a host without IPv6
                    raise ListenError(f"cannot listen on {listen}: {error.strerror}") from None


class GrpcServerHandle:
    def __init__(
        self,
        server: aio.Server,
        health: health_aio.HealthServicer,
        port: int,
        service_names: Sequence[str],
    ) -> None:
        self.server = server
        self.health = health
        self.port = port
        self.service_names = list(service_names)
        self.serving = False

    async def start(self) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, _NOT_SERVING)
        await self.server.start()

    async def mark_serving(self) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, _SERVING)
        self.serving = True

    async def mark_not_serving(self) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, _NOT_SERVING)
        self.serving = False

    async def stop(self, grace: float | None = 5.0) -> None:
        """NOT_SERVING, refuse new calls, let running calls finish for ``grace`` seconds."""
        self.serving = False
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def build_server(
    listen: str,
    services: Sequence[ServiceRegistration],
    interceptors: Sequence[aio.ServerInterceptor] = (),
    *,
    options: Sequence[tuple[str, Any]] = (),
    tls: ServerTls | None = None,
) -> GrpcServerHandle:
    """Build (and bind, not start) a server on ``listen`` (``host:port``; port 0 = any free),
    with TLS (and mutual TLS when ``tls.client_ca``) when ``tls`` is given. It accepts
    the keepalive pings of :mod:`trinity_platform.channels` clients."""
    check_listen_address(listen)
    merged = {**dict(SERVER_KEEPALIVE_OPTIONS), "grpc.so_reuseport": 0, **dict(options)}
    server = aio.server(interceptors=list(interceptors), options=list(merged.items()))
    for registration in services:
        registration.add_to_server(registration.servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [r.name for r in services]
    reflection.enable_server_reflection([*names, HEALTH_SERVICE, reflection.SERVICE_NAME], server)
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, tls.credentials())
    except RuntimeError:  # taken between the check and here
        port = 0
    if port == 0:
        raise ListenError(f"cannot listen on {listen}: the port is in use or not available")
    return GrpcServerHandle(server, health, port, names)
