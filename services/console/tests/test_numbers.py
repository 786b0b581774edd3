"""The console shows integral numbers as integers, as every other reader does."""

from __future__ import annotations

import json

from trinity.process.definition.v1 import definition_pb2
from trinity.process.execution.v1 import execution_pb2 as pb
from trinity_console.views import execution_view, process_inputs


def test_an_execution_input_shows_3_not_3_0() -> None:
    execution = pb.Execution(id="exe-1", process_name="numbers")
    execution.input.update({"n": 3, "half": 2.5})
    shown = execution_view(execution)["input"]
    assert json.loads(shown) == {"n": 3, "half": 2.5}
    assert "3.0" not in shown


def test_a_declared_default_shows_as_written() -> None:
    spec = definition_pb2.ProcessSpec(name="numbers")
    declared = spec.inputs.add(name="rounds", type=definition_pb2.INPUT_TYPE_INTEGER)
    declared.default_value.number_value = 3
    inputs, start = process_inputs(spec)
    assert json.loads(start) == {"rounds": 3} and "3.0" not in start
    assert inputs[0]["default"] == "3"
