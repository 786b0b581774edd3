"""Hypothesis strategies for any request message of the contracts, read from its descriptor.

Each field is left unset or given a value from the extremes of its type: huge and
odd strings (NUL, lone surrogates are impossible in protobuf, so the rest of Unicode),
integer limits and negative sizes, NaN and ±Infinity, unknown enum values, Timestamps
and Durations far outside their documented ranges, Structs nested deeper than the
services accept, and page tokens that were forged or edited. ``*_id`` fields are
sometimes the ids of real objects, so the calls reach past "not found".
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}

FLOATS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
)

STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "../../etc/passwd",
            "'; DROP TABLE executions; --",
            "{{ 7 * 7 }}",
            "{% for x in range(10**9) %}{% endfor %}",
            "\u202e\ufeff\U0010ffff",
            "-1",
            "9" * 400,
        ]
    ),
    st.integers(min_value=1, max_value=3).map(lambda n: "x" * (10 ** (n + 3))),  # up to 1 MB
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _forged_token(payload: dict[str, Any], signature: bytes) -> str:
    return f"{_b64(json.dumps(payload).encode())}.{_b64(signature)}"


PAGE_TOKENS = st.one_of(
    STRINGS,
    st.builds(
        _forged_token,
        st.fixed_dictionaries(
            {
                "k": st.lists(
                    st.one_of(st.integers(), st.text(max_size=10), st.none(), st.just({})),
                    max_size=4,
                ),
                "f": st.text(max_size=16),
            }
        ),
        st.binary(min_size=0, max_size=32),
    ),
    st.binary(max_size=64).map(_b64),
    st.just(_b64(b'{"k": ["2026-01-01T00:00:00+00:00", "x"], "f": ""}')),  # unsigned, old style
)

TIMESTAMP_SECONDS = st.one_of(
    st.sampled_from([INT64[0], INT64[1], -62_135_596_801, 253_402_300_800, 0, -1]),
    st.integers(*INT64),
)
NANOS = st.one_of(
    st.sampled_from([-1, 1_000_000_000, INT32[0], INT32[1], 999_999_999, 0]), st.integers(*INT32)
)


def json_values(max_depth: int) -> st.SearchStrategy[Any]:
    """JSON-like values for Structs, sometimes nested past the services' limit."""
    scalars = st.one_of(st.none(), st.booleans(), FLOATS, st.text(max_size=10))
    shallow = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    )
    deep = st.integers(min_value=20, max_value=max_depth).map(_nested)
    return st.one_of(shallow, deep)


def _nested(depth: int) -> Any:
    value: Any = 1
    for index in range(depth):
        value = {"a": value} if index % 2 else [value]
    return value


class KnownIds:
    """Ids of real objects in the suite, for ``*_id`` fields."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)


def _fill_struct(struct: Any, value: Any) -> None:
    """Set a Struct from a dict, level by level (``update`` refuses deep values)."""
    for key, item in value.items():
        _fill_value(struct.fields[key], item)


def _fill_value(target: Any, value: Any) -> None:
    if value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, float | int):
        target.number_value = float(value)
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, list):
        target.list_value.SetInParent()
        for item in value:
            _fill_value(target.list_value.values.add(), item)
    else:
        target.struct_value.SetInParent()
        _fill_struct(target.struct_value, value)


def _field_values(field: FieldDescriptor, ids: KnownIds, depth: int) -> st.SearchStrategy[Any]:
    message_type = field.message_type
    if message_type is not None:
        name = message_type.full_name
        if name == "google.protobuf.Struct":
            return st.dictionaries(st.text(max_size=5), json_values(60), max_size=3)
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            return st.tuples(TIMESTAMP_SECONDS, NANOS)
        if name == "google.protobuf.Value":
            return json_values(60)
        return plans_of(message_type, ids, depth + 1)
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name == "page_token":
            return PAGE_TOKENS
        if field.name.endswith("_id") and ids.ids:
            return st.one_of(st.sampled_from(ids.ids), STRINGS)
        return STRINGS
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return FLOATS
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(*INT32))
    low, high = _INT_RANGES[field.type]
    edges = [v for v in (low, high, -1, 0, 1) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    message_type = field.message_type
    if field.is_repeated and not (message_type and message_type.GetOptions().map_entry):
        for item in value:
            if message_type is None:
                target.append(item)
            else:
                _assign_message(target.add(), message_type, item)
        return
    if message_type is not None and message_type.GetOptions().map_entry:
        value_field = message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_field.message_type is None:
                target[key] = item
            else:
                _assign_message(target[key], value_field.message_type, item)
        return
    if message_type is None:
        setattr(message, field.name, value)
    else:
        _assign_message(target, message_type, value)


def _assign_message(target: Message, message_type: Descriptor, value: Any) -> None:
    name = message_type.full_name
    if name == "google.protobuf.Struct":
        target.SetInParent()
        _fill_struct(target, value)
    elif name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        target.seconds, target.nanos = value  # type: ignore[attr-defined]
    elif name == "google.protobuf.Value":
        _fill_value(target, value)
    else:
        target.SetInParent()
        for field, item in value:
            _assign(target, field, item)


Plan = list[tuple[FieldDescriptor, Any]]
"""Which fields of a message to set to what (built in place: copying a message that
holds a deep Struct fails in protobuf itself)."""


def messages_of(descriptor: Descriptor, ids: KnownIds) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor`` with any subset of their fields set to extreme values."""

    def build(plan: Plan) -> Message:
        message = GetMessageClass(descriptor)()
        for field, value in plan:
            _assign(message, field, value)
        return message

    return plans_of(descriptor, ids).map(build)


def plans_of(descriptor: Descriptor, ids: KnownIds, depth: int = 0) -> st.SearchStrategy[Plan]:
    if depth > 3:
        return st.just([])
    fields = list(descriptor.fields)

    def field_strategy(field: FieldDescriptor) -> st.SearchStrategy[Any]:
        single = _field_values(field, ids, depth)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            return st.dictionaries(
                _field_values(key_field, ids, depth),
                _field_values(value_field, ids, depth),
                max_size=3,
            )
        if field.is_repeated:
            return st.lists(single, max_size=3)
        return single

    @st.composite
    def plan(draw: st.DrawFn) -> Plan:
        chosen = draw(st.lists(st.sampled_from(fields), unique=True)) if fields else []
        return [(field, draw(field_strategy(field))) for field in chosen]

    return plan()
