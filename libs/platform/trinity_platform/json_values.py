"""JSON values through ``google.protobuf.Struct``, which carries every number as a double.

The rule, everywhere a Struct is read (templates, step outputs, the CLI, JSON output,
facts): a number that is integral and within ±2^53 reads back as an integer, any
other number as a float. So ``3`` sent as an input renders as ``3``, never ``3.0``;
the price is that a float without a fraction sent on purpose (``90.0``) reads back
as ``90``, which JSON treats as the same number. ``libs/process_model/FORMAT.md``
("Numbers") documents it for authors.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

# Beyond 2^53 a double no longer holds every integer, so it cannot stand for one.
MAX_EXACT_INTEGER = 2**53


def number(value: float) -> int | float:
    """``3.0`` → ``3``; ``2.5``, ``1e300`` and non-finite numbers stay floats."""
    if value.is_integer() and abs(value) <= MAX_EXACT_INTEGER:
        return int(value)
    return value


def from_value(value: struct_pb2.Value) -> Any:
    """A ``google.protobuf.Value`` as a plain Python value, integers as ``int``."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as a dict, integers as ``int``."""
    return {key: from_value(item) for key, item in struct.fields.items()}


def integral_as_int(value: Any) -> Any:
    """The same JSON-like value with every integral float (within ±2^53) an ``int``."""
    if isinstance(value, float):
        return number(value)
    if isinstance(value, dict):
        return {key: integral_as_int(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral_as_int(item) for item in value]
    return value


def message_to_dict(message: Message, **options: Any) -> dict[str, Any]:
    """``json_format.MessageToDict`` (same options), integral numbers as integers.

    The protobuf JSON mapping writes a Struct's ``3`` as ``3.0``; this writes ``3``.
    """
    converted: dict[str, Any] = integral_as_int(json_format.MessageToDict(message, **options))
    return converted
