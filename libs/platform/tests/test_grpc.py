"""gRPC server bootstrap, error mapping and authentication over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from unittest import mock

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from trinity_platform import errors
from trinity_platform.authz import ROLES, Identity
from trinity_platform.errors import FieldViolation
from trinity_platform.grpc_errors import error_details, rpc_status_of, to_trinity_error
from trinity_platform.grpc_server import GrpcServerHandle, ServiceRegistration, build_server
from trinity_platform.interceptors import (
    AuthInterceptor,
    ErrorMappingInterceptor,
    HandlerCache,
    current_principal,
)

SERVICE = "trinity.test.Probe"
# The probe's permissions are not the product's: viewer gets probe.who for these tests.
ROLE_OVERRIDE = mock.patch.dict(ROLES, {"viewer": ROLES["viewer"] | {"probe.who", "probe.read"}})
SECRET = "password=hunter2"

ERRORS: dict[str, tuple[errors.TrinityError, grpc.StatusCode]] = {
    "invalid": (
        errors.InvalidArgument(
            "bad request",
            [FieldViolation("name", "must not be empty"), FieldViolation("steps[1].id", "dup")],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "not_found": (
        errors.NotFound("no such definition", reason="DEFINITION_NOT_FOUND", metadata={"n": "x"}),
        grpc.StatusCode.NOT_FOUND,
    ),
    "exists": (errors.AlreadyExists("exists"), grpc.StatusCode.ALREADY_EXISTS),
    "precondition": (
        errors.FailedPrecondition("draft", reason="DEFINITION_NOT_PUBLISHED"),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "denied": (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
    "unauthenticated": (errors.Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED),
    "aborted": (errors.Aborted("version moved"), grpc.StatusCode.ABORTED),
    "unavailable": (errors.Unavailable("later"), grpc.StatusCode.UNAVAILABLE),
    "exhausted": (
        errors.ResourceExhausted("budget", reason="BUDGET_EXCEEDED"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
}


async def fail(request: bytes, context: aio.ServicerContext) -> bytes:
    raise ERRORS[request.decode()][0]


async def boom(request: bytes, context: aio.ServicerContext) -> bytes:
    raise RuntimeError(f"db exploded: {SECRET}")


async def who_am_i(request: bytes, context: aio.ServicerContext) -> bytes:
    return (current_principal() or "-").encode()


async def self_abort(request: bytes, context: aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.OUT_OF_RANGE, "handler chose this")
    return b""


async def slow(request: bytes, context: aio.ServicerContext) -> bytes:
    await asyncio.sleep(0.5)
    return b"done"


async def stream_fail(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"1"
    yield b"2"
    raise errors.NotFound("gone mid-stream", reason="EXECUTION_NOT_FOUND")


async def write_fail(request: bytes, context: aio.ServicerContext) -> None:
    await context.write(b"1")
    raise errors.InvalidArgument("bad filter", [FieldViolation("filter", "unknown state")])


async def stream_boom(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"1"
    raise KeyError(SECRET)


async def stream_who(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
    yield (current_principal() or "-").encode()


def probe_registration() -> ServiceRegistration:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Boom": grpc.unary_unary_rpc_method_handler(boom),
            "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
            "SelfAbort": grpc.unary_unary_rpc_method_handler(self_abort),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "StreamFail": grpc.unary_stream_rpc_method_handler(stream_fail),
            "WriteFail": grpc.unary_stream_rpc_method_handler(write_fail),
            "StreamBoom": grpc.unary_stream_rpc_method_handler(stream_boom),
            "StreamWho": grpc.unary_stream_rpc_method_handler(stream_who),
        },
    )
    return ServiceRegistration(
        SERVICE, lambda servicer, server: server.add_generic_rpc_handlers((servicer,)), handler
    )


@pytest.fixture
async def server() -> AsyncIterator[GrpcServerHandle]:
    handle = build_server(
        "127.0.0.1:0",
        [probe_registration()],
        [ErrorMappingInterceptor(), AuthInterceptor({}, PROBE_PERMISSIONS)],
    )
    await handle.start()
    await handle.mark_serving()
    yield handle
    await handle.stop(0)


# Every probe method needs "probe.read" except WhoAmI and StreamWho ("probe.who");
# Fail declares nothing at all (deny by default).
PROBE_PERMISSIONS = {
    f"/{SERVICE}/{method}": "probe.who" if "Who" in method else "probe.read"
    for method in ("Boom", "WhoAmI", "SelfAbort", "Slow", "StreamWho", "StreamFail")
}


@pytest.fixture
async def auth_channel() -> AsyncIterator[aio.Channel]:
    """The probe with authentication on: alice may call WhoAmI, bob may not."""
    identities = {
        "tok-alice": Identity("alice", frozenset({"viewer"})),
        "tok-bob": Identity("bob", frozenset({"operator"})),
    }
    # As the services run it: each method's handler made once (HandlerCache), so these
    # tests also show that every call is decided by its own metadata.
    handle = build_server(
        "127.0.0.1:0",
        [probe_registration()],
        [
            HandlerCache(),
            ErrorMappingInterceptor(),
            AuthInterceptor(identities, PROBE_PERMISSIONS),
        ],
    )
    await handle.start()
    await handle.mark_serving()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
            yield ch
    finally:
        await handle.stop(0)


@pytest.fixture
async def channel(server: GrpcServerHandle) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def unary(channel: aio.Channel, method: str):
    return channel.unary_unary(f"/{SERVICE}/{method}")


def streaming(channel: aio.Channel, method: str):
    return channel.unary_stream(f"/{SERVICE}/{method}")


@pytest.mark.parametrize("kind", sorted(ERRORS))
async def test_each_error_maps_to_its_code_with_error_info(channel: aio.Channel, kind: str) -> None:
    error, code = ERRORS[kind]
    with pytest.raises(aio.AioRpcError) as caught:
        await unary(channel, "Fail")(kind.encode())
    rpc_error = caught.value
    assert rpc_error.code() == code
    assert rpc_error.details() == error.message
    reason, violations = error_details(rpc_error)
    assert reason == error.reason
    status = rpc_status_of(rpc_error)
    assert status is not None and status.code == code.value[0]
    rebuilt = to_trinity_error(rpc_error)
    assert type(rebuilt) is type(error)
    assert rebuilt.reason == error.reason
    assert rebuilt.metadata == error.metadata
    if isinstance(error, errors.InvalidArgument):
        assert violations == error.violations
        assert isinstance(rebuilt, errors.InvalidArgument)
        assert rebuilt.violations == error.violations
    else:
        assert violations == []


async def test_unknown_exception_is_internal_without_leaking(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await unary(channel, "Boom")(b"")
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in (caught.value.details() or "")
    assert "db exploded" not in (caught.value.details() or "")
    assert "reference" in (caught.value.details() or "")
    assert error_details(caught.value)[0] == "INTERNAL"


async def test_a_handler_abort_passes_through(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await unary(channel, "SelfAbort")(b"")
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.details() == "handler chose this"


async def test_server_streaming_errors_are_mapped(channel: aio.Channel) -> None:
    received = []
    with pytest.raises(aio.AioRpcError) as caught:
        async for item in streaming(channel, "StreamFail")(b""):
            received.append(item)
    assert received == [b"1", b"2"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value)[0] == "EXECUTION_NOT_FOUND"

    received = []
    with pytest.raises(aio.AioRpcError) as caught:
        async for item in streaming(channel, "WriteFail")(b""):
            received.append(item)
    assert received == [b"1"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value) == (
        "INVALID_ARGUMENT",
        [FieldViolation("filter", "unknown state")],
    )

    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in streaming(channel, "StreamBoom")(b""):
            pass
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in (caught.value.details() or "")


async def test_without_tokens_every_call_is_anonymous(channel: aio.Channel) -> None:
    who = unary(channel, "WhoAmI")
    assert await who(b"") == b"-"
    # authentication off: a header proves nothing and is not read
    assert await who(b"", metadata=(("authorization", "Bearer tok-alice"),)) == b"-"


async def test_auth_principal_from_bearer_token(auth_channel: aio.Channel) -> None:
    with ROLE_OVERRIDE:
        who = unary(auth_channel, "WhoAmI")
        assert await who(b"", metadata=(("authorization", "Bearer tok-alice"),)) == b"alice"
        assert await who(b"", metadata=(("authorization", "bearer tok-alice"),)) == b"alice"
        call = streaming(auth_channel, "StreamWho")(
            b"", metadata=(("authorization", "Bearer tok-alice"),)
        )
        assert [m async for m in call] == [b"alice"]


async def test_auth_refuses_anonymous_unknown_and_unauthorized(auth_channel: aio.Channel) -> None:
    with ROLE_OVERRIDE:
        who = unary(auth_channel, "WhoAmI")
        with pytest.raises(aio.AioRpcError) as caught:
            await who(b"")
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_details(caught.value)[0] == "AUTHENTICATION_REQUIRED"
        for bad in ("Bearer nope", "Basic dG9rLWFsaWNl", "Bearer "):
            with pytest.raises(aio.AioRpcError) as caught:
                await who(b"", metadata=(("authorization", bad),))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_details(caught.value)[0] == "INVALID_TOKEN"
        with pytest.raises(aio.AioRpcError) as caught:
            async for _ in streaming(auth_channel, "StreamWho")(
                b"", metadata=(("authorization", "Bearer nope"),)
            ):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # bob is authenticated but his roles lack probe.who
        with pytest.raises(aio.AioRpcError) as caught:
            await who(b"", metadata=(("authorization", "Bearer tok-bob"),))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(caught.value)[0] == "PERMISSION_REQUIRED"
        # Fail declares no permission: nobody may call it
        with pytest.raises(aio.AioRpcError) as caught:
            await unary(auth_channel, "Fail")(
                b"denied", metadata=(("authorization", "Bearer tok-alice"),)
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(caught.value)[0] == "PERMISSION_REQUIRED"


async def test_a_kept_handler_decides_each_call_by_its_own_token(
    auth_channel: aio.Channel,
) -> None:
    """The method's handler is made for the first call and kept: the calls after it,
    one after another and at once, are still each answered as their own caller."""
    with ROLE_OVERRIDE:
        who = unary(auth_channel, "WhoAmI")

        async def as_(token: str | None) -> bytes | grpc.StatusCode:
            metadata = () if token is None else (("authorization", f"Bearer {token}"),)
            try:
                return bytes(await who(b"", metadata=metadata))
            except aio.AioRpcError as error:
                return error.code()

        callers = ["tok-alice", None, "tok-bob", "nope", "tok-alice"] * 4
        answers = {
            "tok-alice": b"alice",
            None: grpc.StatusCode.UNAUTHENTICATED,
            "tok-bob": grpc.StatusCode.PERMISSION_DENIED,
            "nope": grpc.StatusCode.UNAUTHENTICATED,
        }
        assert [await as_(token) for token in callers] == [answers[t] for t in callers]
        at_once = await asyncio.gather(*(as_(token) for token in callers))
        assert at_once == [answers[t] for t in callers]


class CountingInterceptor(aio.ServerInterceptor):
    def __init__(self) -> None:
        self.made: list[str] = []

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        self.made.append(handler_call_details.method)
        return await continuation(handler_call_details)


async def test_the_handler_cache_makes_each_methods_handler_once() -> None:
    counting = CountingInterceptor()
    handle = build_server(
        "127.0.0.1:0",
        [probe_registration()],
        [
            HandlerCache(),
            ErrorMappingInterceptor(),
            AuthInterceptor({}, PROBE_PERMISSIONS),
            counting,
        ],
    )
    await handle.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            for _ in range(3):
                assert await unary(channel, "WhoAmI")(b"") == b"-"
                with pytest.raises(aio.AioRpcError):
                    await unary(channel, "Boom")(b"")
                with pytest.raises(aio.AioRpcError) as unknown:
                    await unary(channel, "NoSuchMethod")(b"")
                assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await handle.stop(0)
    made = [m.rsplit("/", 1)[1] for m in counting.made]
    assert made.count("WhoAmI") == 1 and made.count("Boom") == 1
    assert made.count("NoSuchMethod") == 3  # an unknown method is not kept


async def test_health_and_reflection_need_no_token(auth_channel: aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(auth_channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    response = await health.Check(
        health_pb2.HealthCheckRequest(service=""),
        metadata=(("authorization", "Bearer wrong"),),
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE in await list_services(auth_channel)
    assert SERVICE in await list_services(auth_channel, metadata=(("authorization", "Bearer x"),))


async def list_services(channel: aio.Channel, metadata=None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
    )
    async for response in call:
        return [s.name for s in response.list_services_response.service]
    return []


async def test_reflection_lists_services_health_and_reflection(channel: aio.Channel) -> None:
    assert sorted(await list_services(channel)) == sorted(
        [SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
    )


async def test_health_not_serving_until_marked() -> None:
    handle = build_server("127.0.0.1:0", [probe_registration()], [ErrorMappingInterceptor()])
    await handle.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for name in ("", SERVICE):
                response = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await handle.mark_serving()
            for name in ("", SERVICE):
                response = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert response.status == health_pb2.HealthCheckResponse.SERVING
            await handle.mark_not_serving()
            response = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await handle.stop(0)


async def test_stop_drains_calls_in_flight(server: GrpcServerHandle, channel: aio.Channel) -> None:
    call = unary(channel, "Slow")(b"")
    await asyncio.sleep(0.1)
    await server.stop(grace=2.0)
    assert await call == b"done"
