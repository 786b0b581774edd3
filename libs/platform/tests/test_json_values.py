"""Integral numbers that went into a google.protobuf.Struct come out as integers."""

from __future__ import annotations

import math

from google.protobuf import struct_pb2

from trinity.process.execution.v1 import facts_pb2
from trinity_platform.json_values import (
    MAX_EXACT_INTEGER,
    integral_as_int,
    message_to_dict,
    number,
    struct_to_dict,
)


def test_the_rule() -> None:
    assert number(3.0) == 3 and isinstance(number(3.0), int)
    assert number(-0.0) == 0 and isinstance(number(-0.0), int)
    assert number(2.5) == 2.5
    assert number(float(MAX_EXACT_INTEGER)) == MAX_EXACT_INTEGER
    beyond = float(MAX_EXACT_INTEGER * 4)
    assert isinstance(number(beyond), float)  # no longer exact: stays a float
    assert math.isinf(number(math.inf)) and math.isnan(number(math.nan))


def test_a_struct_keeps_integers_at_every_depth() -> None:
    value = {"n": 3, "half": 2.5, "list": [1, 2.0, {"deep": 90}], "flag": True, "none": None}
    struct = struct_pb2.Struct()
    struct.update(value)
    read = struct_to_dict(struct)
    assert read == value
    assert isinstance(read["n"], int) and isinstance(read["list"][2]["deep"], int)
    assert isinstance(read["flag"], bool) and read["none"] is None
    assert integral_as_int({"a": [1.0, 1.5, "1.0"]}) == {"a": [1, 1.5, "1.0"]}


def test_the_json_of_a_message_writes_integers_as_integers() -> None:
    fact = facts_pb2.ProcessStarted()
    fact.input.update({"n": 3, "score": 90.5})
    said = message_to_dict(fact, preserving_proto_field_name=True)
    assert said["input"] == {"n": 3, "score": 90.5}
    assert isinstance(said["input"]["n"], int)
