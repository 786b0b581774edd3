"""The one way a process opens a gRPC channel to a Trinity service.

Every client (the services calling each other, executors, the CLI, tests) gets:

- **all replicas**: a target is ``dns:///name:port`` (every address the name
  resolves to, e.g. a Kubernetes headless Service), a comma list of addresses
  (``10.0.0.1:50052,10.0.0.2:50052``), or one ``host:port``;
- **round_robin** over them, with ``grpc.health.v1`` health checking, so a replica
  that is NOT_SERVING (starting, draining) or gone takes no new calls and the
  others carry the load at once, without waiting for it to come back;
- **keepalive** pings, so a peer that vanished without closing its connection
  (a lost node) is noticed in seconds, not at the next TCP timeout;
- **TLS** when configured (:mod:`trinity_platform.tls`), with a client certificate
  for servers that require mutual TLS;
- an optional bearer **token** (a string, or a callable asked at every call so a
  rotated token is picked up) in the ``authorization`` metadata.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from trinity_platform.telemetry import client_interceptors
from trinity_platform.tls import ClientTls

TokenSource = str | Callable[[], str | None] | None

# round_robin over every resolved address; only addresses whose grpc.health.v1
# (overall status, service "") says SERVING take calls.
SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)
KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A replica that restarts is reached again within a second, not after gRPC's
    # default backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # Re-resolve a dns:/// name (new pods) at most every 5 s instead of 30 s.
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
)

# For a health probe of one server: read its status whatever it is (health-checked
# round_robin would not send a call to a server that says NOT_SERVING).
PROBE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"pick_first": {}}]})),
)

# What servers must accept for the clients' keepalive (else they answer GOAWAY
# "too_many_pings" and the connection drops): see grpc_server.build_server.
SERVER_KEEPALIVE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
)

_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def _split_host_port(address: str) -> tuple[str, str]:
    if address.startswith("["):  # [::1]:50052
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host, port


def channel_target(target: str) -> str:
    """The gRPC target for ``target``: a URI (``dns:///…``, ``ipv4:…``) as is; a comma
    list of ``ip:port`` as an ``ipv4:``/``ipv6:`` target over all of them; one
    ``host:port`` as is (gRPC resolves it by DNS, every address it has)."""
    target = target.strip()
    if not target:
        raise ValueError("an empty gRPC target")
    if target.startswith(_SCHEMES):
        return target
    addresses = [a.strip() for a in target.split(",") if a.strip()]
    if len(addresses) == 1:
        _split_host_port(addresses[0])
        return addresses[0]
    families = set()
    normalized = []
    for address in addresses:
        host, port = _split_host_port(address)
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"{target!r}: a list of addresses takes IP addresses only ({host!r} is a name); "
                "for a name with several addresses use dns:///name:port"
            ) from None
        families.add(ip.version)
        normalized.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if len(families) > 1:
        raise ValueError(f"{target!r}: mixes IPv4 and IPv6 addresses")
    scheme = "ipv6" if families == {6} else "ipv4"
    return f"{scheme}:{','.join(normalized)}"


def _server_name(target: str, tls: ClientTls) -> str | None:
    """The name TLS checks: the configured one, else for an address list the first
    address's host (gRPC would otherwise check the whole list as one name)."""
    if tls.server_name:
        return tls.server_name
    if target.startswith(("ipv4:", "ipv6:")):
        first = target.split(":", 1)[1].split(",")[0]
        return _split_host_port(first)[0]
    return None


def channel_options(
    target: str, tls: ClientTls | None = None, extra: Sequence[tuple[str, Any]] = ()
) -> list[tuple[str, Any]]:
    options = dict(CHANNEL_OPTIONS)
    if tls is not None:
        name = _server_name(channel_target(target), tls)
        if name:
            options["grpc.ssl_target_name_override"] = name
    options.update(dict(extra))
    return list(options.items())


def _token_value(token: TokenSource) -> str | None:
    return token() if callable(token) else token


def _with_token(metadata: Any, token: TokenSource) -> Any:
    value = _token_value(token)
    if not value:
        return metadata
    entries = [m for m in (metadata or ()) if m[0].lower() != "authorization"]
    return (*entries, ("authorization", f"Bearer {value}"))


class _BearerUnaryUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        details = client_call_details._replace(
            metadata=_with_token(client_call_details.metadata, self._token)
        )
        return await continuation(details, request)


class _BearerUnaryStream(aio.UnaryStreamClientInterceptor):
    def __init__(self, token: TokenSource) -> None:
        self._token = token

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        details = client_call_details._replace(
            metadata=_with_token(client_call_details.metadata, self._token)
        )
        return await continuation(details, request)


def open_channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    token: TokenSource = None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[aio.ClientInterceptor] = (),
) -> aio.Channel:
    """An asyncio channel to every replica behind ``target`` (see the module docstring).

    ``token`` (a string, or a callable returning one or None) goes in every call's
    ``authorization: Bearer`` metadata, replacing one the caller set.
    """
    resolved = channel_target(target)
    chain: list[aio.ClientInterceptor] = []
    if token is not None:
        chain += [_BearerUnaryUnary(token), _BearerUnaryStream(token)]
    chain += list(interceptors)
    chain += client_interceptors()  # tracing: a client span and traceparent per call (off: none)
    opts = channel_options(target, tls, options)
    if tls is None:
        return aio.insecure_channel(resolved, options=opts, interceptors=chain or None)
    return aio.secure_channel(resolved, tls.credentials(), options=opts, interceptors=chain or None)


def open_blocking_channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """The same channel for synchronous code (the CLI, health probes); tokens go in
    each call's metadata there."""
    resolved = channel_target(target)
    opts = channel_options(target, tls, options)
    if tls is None:
        return grpc.insecure_channel(resolved, options=opts)
    return grpc.secure_channel(resolved, tls.credentials(), options=opts)
