"""Channels: round_robin over every replica with health checking, TLS and mutual TLS,
bearer tokens — against real grpc.aio servers over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import trustme
from grpc import aio

from trinity_platform.channels import channel_target, open_blocking_channel, open_channel
from trinity_platform.grpc_server import GrpcServerHandle, ServiceRegistration, build_server
from trinity_platform.tls import (
    ClientTls,
    ServerTls,
    TlsConfigError,
    client_tls_from_env,
    server_tls_from_env,
)

SERVICE = "trinity.test.Replica"


def replica_registration(name: str) -> ServiceRegistration:
    async def who(request: bytes, context: aio.ServicerContext) -> bytes:
        auth = dict(context.invocation_metadata() or ()).get("authorization", "")
        return f"{name}|{auth}".encode()

    async def who_stream(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        yield await who(request, context)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Who": grpc.unary_unary_rpc_method_handler(who),
            "WhoStream": grpc.unary_stream_rpc_method_handler(who_stream),
        },
    )
    return ServiceRegistration(
        SERVICE, lambda servicer, server: server.add_generic_rpc_handlers((servicer,)), handler
    )


Start = Callable[..., Awaitable[GrpcServerHandle]]


@pytest.fixture
async def start_replica() -> AsyncIterator[Start]:
    started: list[GrpcServerHandle] = []

    async def start(name: str, tls: ServerTls | None = None) -> GrpcServerHandle:
        handle = build_server("127.0.0.1:0", [replica_registration(name)], tls=tls)
        await handle.start()
        await handle.mark_serving()
        started.append(handle)
        return handle

    yield start
    for handle in started:
        await handle.stop(0)


async def who(channel: aio.Channel, **kwargs: object) -> str:
    reply = await channel.unary_unary(f"/{SERVICE}/Who")(b"", timeout=5, **kwargs)
    return bytes(reply).decode()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def _times(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


# ---------------------------------------------------------------------- targets


def test_targets_resolve_to_every_replica() -> None:
    assert channel_target("dns:///execution:50052") == "dns:///execution:50052"
    assert channel_target("127.0.0.1:1") == "127.0.0.1:1"
    assert channel_target("127.0.0.1:1, localhost:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    for bad in ("", "nohost", "a:1,b:2", "127.0.0.1:1,[::1]:2", "127.0.0.1:x,127.0.0.1:2"):
        with pytest.raises(ValueError):
            channel_target(bad)


# ---------------------------------------------------------------- load balancing


async def test_calls_spread_over_replicas_and_skip_one_not_serving(start_replica: Start) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    async with open_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:

        async def both_answer() -> bool:
            seen = [(await who(channel)).split("|")[0] async for _ in _times(10)]
            return set(seen) == {"a", "b"}

        await until(both_answer)
        # A replica that says NOT_SERVING (starting, draining) takes no new calls.
        await a.mark_not_serving()

        async def only_b() -> bool:
            return {(await who(channel)).split("|")[0] async for _ in _times(10)} == {"b"}

        await until(only_b)
        await a.mark_serving()
        await until(both_answer)


async def test_a_replica_gone_costs_no_new_call(start_replica: Start) -> None:
    a, b = await start_replica("a"), await start_replica("b")
    async with open_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:

        async def both_answer() -> bool:
            return {(await who(channel)).split("|")[0] async for _ in _times(10)} == {"a", "b"}

        await until(both_answer)
        await a.server.stop(None)  # gone, as a killed process: connections close
        # Every call made after that succeeds, on b; none waits for a to come back.
        for _ in range(20):
            assert (await who(channel, wait_for_ready=True)).startswith("b|")


# ---------------------------------------------------------------------- tokens


async def test_a_token_or_token_source_goes_in_every_call(start_replica: Start) -> None:
    a = await start_replica("a")
    tokens = iter(["first", "second"])
    async with open_channel(f"127.0.0.1:{a.port}", token=lambda: next(tokens)) as channel:
        assert await who(channel) == "a|Bearer first"
        stream = channel.unary_stream(f"/{SERVICE}/WhoStream")(b"", timeout=5)
        assert [bytes(m).decode() async for m in stream] == ["a|Bearer second"]
    async with open_channel(f"127.0.0.1:{a.port}", token="fixed") as channel:
        assert await who(channel, metadata=(("authorization", "Bearer spoof"),)) == "a|Bearer fixed"


# ------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, client_ca: trustme.CA | None = None) -> ServerTls:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    return ServerTls(
        cert=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        key=cert.private_key_pem.bytes(),
        client_ca=client_ca.cert_pem.bytes() if client_ca else None,
    )


def client_tls(ca: trustme.CA, client_cert_ca: trustme.CA | None = None) -> ClientTls:
    if client_cert_ca is None:
        return ClientTls(ca=ca.cert_pem.bytes())
    cert = client_cert_ca.issue_cert("executor@example.com")
    return ClientTls(
        ca=ca.cert_pem.bytes(),
        cert=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        key=cert.private_key_pem.bytes(),
    )


async def test_tls_over_an_address_list(start_replica: Start, ca: trustme.CA) -> None:
    a = await start_replica("a", server_tls(ca))
    b = await start_replica("b", server_tls(ca))
    target = f"127.0.0.1:{a.port},127.0.0.1:{b.port}"
    async with open_channel(target, tls=client_tls(ca)) as channel:

        async def both_answer() -> bool:
            return {(await who(channel)).split("|")[0] async for _ in _times(10)} == {"a", "b"}

        await until(both_answer)
    # Plaintext, or a CA that did not sign the server's certificate: no call gets through.
    async with open_channel(f"127.0.0.1:{a.port}") as plaintext:
        with pytest.raises(grpc.RpcError) as refused:
            await who(plaintext)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with open_channel(f"127.0.0.1:{a.port}", tls=client_tls(trustme.CA())) as stranger:
        with pytest.raises(grpc.RpcError) as untrusted:
            await who(stranger)
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    start_replica: Start, ca: trustme.CA
) -> None:
    clients_ca = trustme.CA()
    a = await start_replica("a", server_tls(ca, client_ca=clients_ca))
    async with open_channel(f"127.0.0.1:{a.port}", tls=client_tls(ca, clients_ca)) as channel:
        assert await who(channel) == "a|"
    for refused_tls in (client_tls(ca), client_tls(ca, trustme.CA())):
        async with open_channel(f"127.0.0.1:{a.port}", tls=refused_tls) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                await who(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    # The blocking channel (CLI, probes) speaks the same TLS.
    def blocking_call() -> bytes:
        tls = client_tls(ca, clients_ca)
        with open_blocking_channel(f"127.0.0.1:{a.port}", tls=tls) as channel:
            return bytes(channel.unary_unary(f"/{SERVICE}/Who")(b"", timeout=5))

    assert await asyncio.to_thread(blocking_call) == b"a|"


def test_tls_settings_from_the_environment(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("127.0.0.1")
    files = {
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "ca": tmp_path / "ca.pem",
    }
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    assert server_tls_from_env({}) is None and client_tls_from_env({}) is None
    server = server_tls_from_env(
        {
            "TRINITY_TLS_CERT_FILE": str(files["cert"]),
            "TRINITY_TLS_KEY_FILE": str(files["key"]),
            "TRINITY_TLS_CLIENT_CA_FILE": str(files["ca"]),
        }
    )
    assert server is not None and server.client_ca == files["ca"].read_bytes()
    client = client_tls_from_env(
        {"TRINITY_TLS_CA_FILE": str(files["ca"]), "TRINITY_TLS_SERVER_NAME": "work"}
    )
    assert client is not None and client.server_name == "work" and client.cert is None
    for incomplete in (
        {"TRINITY_TLS_CERT_FILE": str(files["cert"])},
        {"TRINITY_TLS_CLIENT_CA_FILE": str(files["ca"])},
        {"TRINITY_TLS_CERT_FILE": str(tmp_path / "missing"), "TRINITY_TLS_KEY_FILE": "x"},
    ):
        with pytest.raises(TlsConfigError):
            server_tls_from_env(incomplete)
    with pytest.raises(TlsConfigError):
        client_tls_from_env({"TRINITY_TLS_CLIENT_CERT_FILE": str(files["cert"])})


def test_the_readme_lists_the_security_settings() -> None:
    from trinity_platform.config import security_settings_markdown

    readme = Path(__file__).resolve().parents[3] / "README.md"
    assert security_settings_markdown() in readme.read_text()
