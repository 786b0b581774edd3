"""Undecodable bodies and out-of-range values: INVALID_ARGUMENT with field violations.

Without the check, grpc answers an undecodable body UNKNOWN ("Unexpected DecodeError");
the first test shows that on a bare server, the others that the platform's interceptor
answers INVALID_ARGUMENT instead, for unary and server-streaming methods alike.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from grpc import aio

from trinity.process.definition.v1 import definition_pb2
from trinity.process.execution.v1 import execution_service_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity_platform.errors import FieldViolation, InvalidArgument, NotFound
from trinity_platform.grpc_errors import error_details
from trinity_platform.grpc_server import GrpcServerHandle, ServiceRegistration, build_server
from trinity_platform.interceptors import ErrorMappingInterceptor
from trinity_platform.request_checks import (
    MAX_STRUCT_DEPTH,
    RequestCheckInterceptor,
    message_violations,
)

SERVICE = "trinity.test.Checked"
Trigger = execution_service_pb2.TriggerProcessRequest


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_struct(depth: int) -> struct_pb2.Struct:
    """A Struct of ``depth`` levels, built bottom-up (update() refuses what it cannot copy)."""
    inner = struct_pb2.Struct()
    inner["leaf"] = 1
    for _ in range(depth - 1):
        outer = struct_pb2.Struct()
        outer.fields["a"].struct_value.CopyFrom(inner)
        inner = outer
    return inner


def deep_struct_bytes(depth: int) -> bytes:
    """The wire form of ``{"a": {"a": ... 1}}`` (``depth`` Structs) without building it
    as a message (protobuf refuses to build what it could not decode)."""

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + _varint(len(payload)) + payload

    body = field(1, b"\x0a\x01a" + field(2, bytes([2 << 3 | 1]) + b"\x00" * 8))  # a: 0.0
    for _ in range(depth - 1):
        body = field(1, b"\x0a\x01a" + field(2, field(5, body)))
    return field(4, body)  # TriggerProcessRequest.input


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


async def echo(request: Trigger, context: aio.ServicerContext) -> Trigger:
    return request


async def refuse(request: Trigger, context: aio.ServicerContext) -> Trigger:
    """Errors quoting the request, as services' errors do."""
    if request.triggered_by == "many":
        raise InvalidArgument(
            "bad",
            [
                FieldViolation(f"f{i}.{request.process_name}", request.process_name)
                for i in range(500)
            ],
            metadata={f"k{i}": request.process_name for i in range(100)},
        )
    raise NotFound(
        f"no process named {request.process_name!r}", metadata={"name": request.process_name}
    )


async def echo_stream(request: Trigger, context: aio.ServicerContext) -> AsyncIterator[Trigger]:
    yield request


def registration() -> ServiceRegistration:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo,
                request_deserializer=Trigger.FromString,
                response_serializer=Trigger.SerializeToString,
            ),
            "Refuse": grpc.unary_unary_rpc_method_handler(
                refuse,
                request_deserializer=Trigger.FromString,
                response_serializer=Trigger.SerializeToString,
            ),
            "EchoStream": grpc.unary_stream_rpc_method_handler(
                echo_stream,
                request_deserializer=Trigger.FromString,
                response_serializer=Trigger.SerializeToString,
            ),
        },
    )
    return ServiceRegistration(
        SERVICE, lambda servicer, server: server.add_generic_rpc_handlers((servicer,)), handler
    )


async def serve(*interceptors: aio.ServerInterceptor) -> GrpcServerHandle:
    handle = build_server("127.0.0.1:0", [registration()], list(interceptors))
    await handle.start()
    return handle


@pytest.fixture
async def channel() -> AsyncIterator[aio.Channel]:
    handle = await serve(ErrorMappingInterceptor(), RequestCheckInterceptor())
    async with aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
        yield ch
    await handle.stop(0)


async def call(channel: aio.Channel, method: str, body: bytes) -> list[bytes]:
    if method == "Echo":
        return [await channel.unary_unary(f"/{SERVICE}/Echo")(body)]
    return [item async for item in channel.unary_stream(f"/{SERVICE}/EchoStream")(body)]


GARBAGE = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x02\xc3\x28", b"\x08" + b"\xff" * 11]


async def test_a_bare_grpc_server_answers_undecodable_bodies_unknown() -> None:
    handle = await serve()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            with pytest.raises(aio.AioRpcError) as caught:
                await call(channel, "Echo", GARBAGE[0])
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
    finally:
        await handle.stop(0)


@pytest.mark.parametrize("method", ["Echo", "EchoStream"])
@pytest.mark.parametrize("body", GARBAGE)
async def test_undecodable_bodies_are_invalid_argument(
    channel: aio.Channel, method: str, body: bytes
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, method, body)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(caught.value)
    assert reason == "UNDECODABLE_REQUEST"
    assert [v.field for v in violations] == ["request"]
    assert "trinity.process.execution.v1.TriggerProcessRequest" in violations[0].description


@pytest.mark.parametrize("method", ["Echo", "EchoStream"])
async def test_struct_past_the_protobuf_limit_is_invalid_argument(
    channel: aio.Channel, method: str
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, method, deep_struct_bytes(200))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0] == "UNDECODABLE_REQUEST"

    # Decodable, but too deep to be copied into the execution and its facts.
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, method, deep_struct_bytes(MAX_STRUCT_DEPTH + 1))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(caught.value)
    assert reason == "INVALID_ARGUMENT"
    assert violations[0].field == "input" + ".a" * MAX_STRUCT_DEPTH
    assert f"deeper than {MAX_STRUCT_DEPTH}" in violations[0].description

    fine = Trigger(input=deep_struct(MAX_STRUCT_DEPTH))
    [reply] = await call(channel, method, fine.SerializeToString())
    assert Trigger.FromString(reply) == fine


def test_out_of_range_values_are_named_by_path() -> None:
    request = Trigger(process_name="p")
    request.input["nan"] = math.nan
    request.input["inf"] = -math.inf
    request.input["list"] = [1, 2]
    request.input.get_or_create_list("list").values[1].number_value = math.inf
    request.input.fields["unset"].Clear()
    request.input.fields["unset"].SetInParent()
    violations = {v.field: v.description for v in message_violations(request)}
    assert set(violations) == {"input.nan", "input.inf", "input.list[1]", "input.unset"}
    assert "finite" in violations["input.nan"]
    assert "must be set" in violations["input.unset"]


@pytest.mark.parametrize(
    ("seconds", "nanos", "bad"),
    [
        (253_402_300_800, 0, "seconds"),
        (-62_135_596_801, 0, "seconds"),
        (0, -1, "nanos"),
        (0, 1_000_000_000, "nanos"),
        (253_402_300_799, 999_999_999, None),
        (-62_135_596_800, 0, None),
    ],
)
def test_timestamps_outside_year_1_to_9999_are_refused(
    seconds: int, nanos: int, bad: str | None
) -> None:
    request = execution_service_pb2.ListExecutionsRequest(
        created_after=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    )
    fields = [v.field for v in message_violations(request)]
    assert fields == ([f"created_after.{bad}"] if bad else [])


@pytest.mark.parametrize(
    ("seconds", "nanos", "bad"),
    [
        (315_576_000_001, 0, "seconds"),
        (-315_576_000_001, 0, "seconds"),
        (1, -1, "nanos"),
        (-1, 1, "nanos"),
        (0, 1_000_000_000, "nanos"),
        (-315_576_000_000, -999_999_999, None),
    ],
)
def test_durations_outside_ten_thousand_years_are_refused(
    seconds: int, nanos: int, bad: str | None
) -> None:
    request = work_service_pb2.RequestWorkRequest(
        timeout=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    fields = [v.field for v in message_violations(request)]
    assert fields == ([f"timeout.{bad}"] if bad else [])


def test_repeated_and_nested_messages_are_walked_and_violations_capped() -> None:
    request = work_service_pb2.RecordWorkCompletedRequest()
    request.result.structured_output["x"] = math.nan
    assert [v.field for v in message_violations(request)] == ["result.structured_output.x"]
    many = Trigger()
    for index in range(1000):
        many.input[f"k{index}"] = math.nan
    assert len(message_violations(many)) == 20
    assert message_violations(work_pb2.WorkRequest()) == []


@pytest.mark.parametrize("name", ["x" * 1_000_000, "\u00e9\U0001f600" * 100_000])
async def test_errors_quoting_a_huge_request_stay_within_the_trailer_limit(
    channel: aio.Channel, name: str
) -> None:
    """Unclipped, the client saw RESOURCE_EXHAUSTED ("metadata size exceeds hard limit")."""
    refuse = channel.unary_unary(f"/{SERVICE}/Refuse")
    with pytest.raises(aio.AioRpcError) as caught:
        await refuse(Trigger(process_name=name).SerializeToString())
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert (caught.value.details() or "").endswith("…")
    assert len((caught.value.details() or "").encode()) <= 400

    with pytest.raises(aio.AioRpcError) as caught:
        await refuse(Trigger(process_name=name, triggered_by="many").SerializeToString())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(caught.value)
    assert reason == "INVALID_ARGUMENT"
    assert 1 < len(violations) < 500
    assert (
        violations[-1].description.startswith("and ")
        and "more violations" in violations[-1].description
    )


def test_nul_characters_are_refused_in_every_kind_of_text() -> None:
    """PostgreSQL cannot store NUL in text: unchecked, each of these was INTERNAL there."""
    request = Trigger(process_name="a\x00b", request_id="ok")
    request.input["x"] = "\x00"
    request.input["y\x00"] = 1
    fields = sorted(v.field for v in message_violations(request))
    assert fields == sorted(["process_name", "input.x", "input.y\x00"])
    spec = definition_pb2.ProcessSpec(name="p")
    spec.labels["k\x00"] = "v"
    spec.labels["k"] = "\x00"
    fields = sorted(v.field for v in message_violations(spec))
    assert fields == sorted(["labels['k\\x00']", "labels['k']"])


def test_unsigned_64_bit_values_beyond_signed_range_are_refused() -> None:
    """A database column is a signed 64-bit integer: 2^63 and above overflowed there."""
    request = execution_service_pb2.WatchExecutionRequest(execution_id="e", after_sequence=2**63)
    assert [v.field for v in message_violations(request)] == ["after_sequence"]
    request.after_sequence = 2**63 - 1
    assert message_violations(request) == []


def test_the_items_of_a_batch_are_left_to_their_servicer() -> None:
    """A batch's items (``checked_per_item``) are each checked by the servicer, which answers a
    bad one with its own status: the call's check passes them, ``check_item`` refuses them."""
    from trinity_platform.batches import check_item

    request = work_service_pb2.RequestWorkBatchRequest()
    request.items.add().request.request_id = "fine"
    bad = request.items.add()
    bad.request.request_id = "a\x00b"
    bad.request.timeout.seconds = -(10**13)
    assert message_violations(request) == []
    check_item(request.items[0].request)
    with pytest.raises(InvalidArgument) as caught:
        check_item(bad.request)
    assert [v.field for v in caught.value.violations] == ["request_id", "timeout.seconds"]
