"""Every request is decoded and range-checked here, before any servicer sees it.

grpc answers a request body its deserializer cannot read with UNKNOWN ("Unexpected
DecodeError"), and a message that decodes can still hold values nothing downstream can
use: a Timestamp or Duration outside its documented range, NaN or Infinity, text
holding NUL (PostgreSQL cannot store it), an unsigned 64-bit value no database column
holds, a Struct ``Value`` with no kind, or a Struct so deep that copying it into a
bigger message (the execution, a fact) exceeds protobuf's nesting limit and fails
deep inside a handler as INTERNAL. :class:`RequestCheckInterceptor` takes
deserialization over (the handler's deserializer is removed, the behaviour decodes),
so both are answered INVALID_ARGUMENT with BadRequest field violations, once, for
every service.

The items of a batch RPC (a repeated field marked ``checked_per_item`` in the contract)
are skipped: its servicer checks each with :func:`message_violations` and answers a bad
item with its own status, so one bad item does not fail the call.

Only unary-request RPCs are checked (every RPC of the contracts is): a client-streaming
behaviour may read its requests through the context, which no wrapper can intercept.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc import aio

from trinity.process.common.v1 import options_pb2
from trinity_platform.errors import FieldViolation, InvalidArgument

MAX_STRUCT_DEPTH = 24
"""Deepest Struct (JSON) nesting accepted, the Struct itself being level 1. Each level
costs protobuf up to three of its 100 nesting levels, and a request's Struct ends up
inside executions, steps and facts several levels deep."""

MAX_VIOLATIONS = 20
"""At most this many violations are reported (a hostile message may hold millions)."""

TIMESTAMP_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
DURATION_MAX_SECONDS = 315_576_000_000  # about 10,000 years
MAX_NANOS = 999_999_999

UNDECODABLE_REQUEST = "UNDECODABLE_REQUEST"

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST = "google.protobuf.ListValue"
_CHECKED_TYPES = {_TIMESTAMP, _DURATION, _STRUCT, _VALUE, _LIST}
_FLOATING = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_UNSIGNED_64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}
MAX_INT64 = 2**63 - 1


class _Full(Exception):
    """Enough violations collected."""


class _Violations:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))
        if len(self.items) >= MAX_VIOLATIONS:
            raise _Full


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@cache
def _may_hold_checked_values(descriptor: Descriptor) -> bool:
    """Whether messages of this type can contain anything :func:`message_violations` checks
    (so the walk skips the subtrees that cannot)."""
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in _CHECKED_TYPES:
            return True
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        for field in current.fields:
            if field.type in _FLOATING | _UNSIGNED_64 or field.type == FieldDescriptor.TYPE_STRING:
                return True
            if field.message_type is not None:
                pending.append(field.message_type)
    return False


@cache
def checked_per_item(field: FieldDescriptor) -> bool:
    """Whether ``field`` holds batch items, each checked by its servicer on its own."""
    return bool(field.GetOptions().Extensions[options_pb2.checked_per_item])


def message_violations(message: Message) -> list[FieldViolation]:
    """The values of ``message`` outside their documented ranges (at most MAX_VIOLATIONS)."""
    found = _Violations()
    with contextlib.suppress(_Full):
        _check(message, "", found)
    return found.items


def _check(message: Message, path: str, found: _Violations) -> None:
    name = message.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        _check_timestamp(message, path, found)
        return
    if name == _DURATION:
        _check_duration(message, path, found)
        return
    if name in (_STRUCT, _VALUE, _LIST):
        _check_json(message, path, 1, found)
        return
    for field, value in message.ListFields():
        if checked_per_item(field):
            continue
        where = _join(path, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if isinstance(key, str) and _NUL in key:
                    found.add(f"{where}[{key!r}]", _NUL_PROBLEM)
                _check_value(value_field, item, f"{where}[{key!r}]", found)
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_value(field, item, f"{where}[{index}]", found)
        else:
            _check_value(field, value, where, found)


_NUL = "\x00"
_NUL_PROBLEM = "must not contain the NUL character (U+0000)"


def _check_value(field: FieldDescriptor, value: Any, path: str, found: _Violations) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        if _NUL in value:
            found.add(path, _NUL_PROBLEM)
    elif field.type in _UNSIGNED_64:
        if value > MAX_INT64:
            found.add(path, f"must be at most {MAX_INT64} (databases store signed 64-bit integers)")
    elif field.type in _FLOATING:
        if not math.isfinite(value):
            found.add(path, f"must be a finite number, got {value}")
    elif field.message_type is not None and _may_hold_checked_values(field.message_type):
        _check(value, path, found)


def _check_timestamp(message: Any, path: str, found: _Violations) -> None:
    if not TIMESTAMP_MIN_SECONDS <= message.seconds <= TIMESTAMP_MAX_SECONDS:
        found.add(_join(path, "seconds"), "must lie between 0001-01-01 and 9999-12-31T23:59:59Z")
    if not 0 <= message.nanos <= MAX_NANOS:
        found.add(_join(path, "nanos"), f"must lie between 0 and {MAX_NANOS}")


def _check_duration(message: Any, path: str, found: _Violations) -> None:
    seconds, nanos = message.seconds, message.nanos
    if not -DURATION_MAX_SECONDS <= seconds <= DURATION_MAX_SECONDS:
        found.add(_join(path, "seconds"), f"must lie within ±{DURATION_MAX_SECONDS} seconds")
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        found.add(_join(path, "nanos"), f"must lie within ±{MAX_NANOS}")
    elif (seconds < 0 < nanos) or (nanos < 0 < seconds):
        found.add(_join(path, "nanos"), "must have the sign of seconds")


def _check_json(message: Any, path: str, depth: int, found: _Violations) -> None:
    """A Struct, ListValue or Value at nesting ``depth`` (the outermost Struct is 1)."""
    name = message.DESCRIPTOR.full_name
    if name == _VALUE:
        kind = message.WhichOneof("kind")
        if kind is None:
            found.add(path, "a value must be set (null_value for null)")
        elif kind == "number_value" and not math.isfinite(message.number_value):
            found.add(path, f"must be a finite number, got {message.number_value}")
        elif kind == "string_value" and _NUL in message.string_value:
            found.add(path, _NUL_PROBLEM)
        elif kind == "struct_value":
            _check_json(message.struct_value, path, depth + 1, found)
        elif kind == "list_value":
            _check_json(message.list_value, path, depth + 1, found)
        return
    if depth > MAX_STRUCT_DEPTH:
        found.add(path, f"nests deeper than {MAX_STRUCT_DEPTH} levels")
        return
    if name == _STRUCT:
        for key, value in message.fields.items():
            if _NUL in key:
                found.add(_join(path, key), _NUL_PROBLEM)
            _check_json(value, _join(path, key), depth, found)
    else:
        for index, value in enumerate(message.values):
            _check_json(value, f"{path}[{index}]", depth, found)


def decode_request(deserialize: Callable[[bytes], Any], raw: bytes) -> Any:
    """The request message of ``raw``, or InvalidArgument with field violations."""
    try:
        message = deserialize(raw)
    except Exception:
        message_type = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
        what = message_type.full_name if message_type is not None else "request"
        raise InvalidArgument(
            f"the request body is not a valid {what} message",
            [FieldViolation("request", f"is not a decodable {what} (protobuf binary)")],
            reason=UNDECODABLE_REQUEST,
        ) from None
    if isinstance(message, Message):
        violations = message_violations(message)
        if violations:
            raise InvalidArgument(
                "the request holds values outside their documented ranges",
                violations,  # the default reason, as the services' own field checks
            )
    return message


def checked_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with its request decoded and checked by :func:`decode_request`."""
    deserialize = handler.request_deserializer
    if deserialize is None or handler.request_streaming:
        return handler
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _decoding(handler.unary_unary, deserialize), response_serializer=serialize
        )
    return grpc.unary_stream_rpc_method_handler(
        _decoding(handler.unary_stream, deserialize), response_serializer=serialize
    )


def _decoding(behavior: Callable[..., Any], deserialize: Callable[[bytes], Any]) -> Any:
    if inspect.isasyncgenfunction(behavior):

        async def stream(raw: bytes, context: Any) -> Any:
            request = decode_request(deserialize, raw)
            async for item in behavior(request, context):
                yield item

        return stream

    async def unary(raw: bytes, context: Any) -> Any:
        result = behavior(decode_request(deserialize, raw), context)
        if inspect.isawaitable(result):
            result = await result
        return result

    return unary


class RequestCheckInterceptor(aio.ServerInterceptor):
    """Applies :func:`checked_handler` to every method (inside the error mapping, which
    turns its InvalidArgument into the status)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return checked_handler(handler)


__all__ = [
    "MAX_STRUCT_DEPTH",
    "RequestCheckInterceptor",
    "checked_handler",
    "checked_per_item",
    "decode_request",
    "message_violations",
]
