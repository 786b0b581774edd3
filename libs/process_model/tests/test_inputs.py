"""Declared inputs: authoring, validation, the contract and checking a trigger's input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity_process_model.authoring import AuthoringError, dump_process, parse_process
from trinity_process_model.inputs import check_input, input_schema, type_problem
from trinity_process_model.model import InputDeclaration, InputType
from trinity_process_model.proto_codec import spec_from_proto, spec_to_proto
from trinity_process_model.validation import validate

PROCESS = """
name: review
inputs:
  topic: {type: string, required: true, description: what to research}
  rounds: {type: integer, default: 2}
  tags: array
  urgent: {type: boolean, default: false}
triggers:
  - schedule: {cron: "0 9 * * *", input: {topic: news}}
steps:
  - id: research
    agent_task: {agent: researcher, message: "{{ input.topic }} in {{ input.rounds }} rounds"}
"""


def declared(text: str = PROCESS) -> tuple[InputDeclaration, ...]:
    return parse_process(text).inputs


def test_inputs_are_read_in_authoring_order_with_shorthand() -> None:
    inputs = declared()
    assert [(d.name, d.type, d.required) for d in inputs] == [
        ("topic", InputType.STRING, True),
        ("rounds", InputType.INTEGER, False),
        ("tags", InputType.ARRAY, False),
        ("urgent", InputType.BOOLEAN, False),
    ]
    assert inputs[1].has_default and inputs[1].default == 2
    assert inputs[3].has_default and inputs[3].default is False
    assert not inputs[2].has_default
    assert validate(parse_process(PROCESS)) == []


def test_inputs_survive_the_file_and_the_contract() -> None:
    spec = parse_process(PROCESS)
    assert parse_process(dump_process(spec)) == spec
    assert spec_from_proto(spec_to_proto(spec)) == spec


def test_unknown_type_and_keys_are_authoring_errors() -> None:
    with pytest.raises(AuthoringError) as caught:
        parse_process(
            PROCESS.replace("type: boolean", "type: bool").replace(
                "tags: array", "tags: {typ: array}"
            )
        )
    fields = [v.field for v in caught.value.violations]
    assert "inputs.urgent.type" in fields
    assert "inputs.tags.typ" in fields


def test_validation_refuses_bad_declarations_and_undeclared_reads() -> None:
    text = (
        PROCESS.replace("default: 2}", 'default: "two"}')
        .replace(
            "{type: boolean, default: false}", "{type: boolean, required: true, default: true}"
        )
        .replace("input.rounds", "input.round")
        .replace("input: {topic: news}", "input: {topic: 3, extra: 1}")
    )
    problems = {(v.field, v.description.split(":")[0]) for v in validate(parse_process(text))}
    assert (
        "inputs.rounds.default",
        "the default must be an integer, got the text 'two'",
    ) in problems
    assert ("inputs.urgent.default", "a required input has no default") in problems
    assert any(f == "steps[0].agent_task.message" and "input.round" in d for f, d in problems)
    assert ("triggers[0].schedule.input.topic", "must be a string, got the number 3") in problems
    assert (
        "triggers[0].schedule.input.extra",
        "is not an input of this process; it declares topic, rounds, tags, urgent",
    ) in problems


def test_without_declarations_any_input_passes_unchecked() -> None:
    spec = parse_process(PROCESS.split("inputs:")[0] + "steps:" + PROCESS.split("steps:")[1])
    assert spec.inputs == ()
    assert validate(spec) == []
    assert check_input((), {"anything": [1]}) == ({"anything": [1]}, [])


def test_check_lists_every_problem_and_fills_defaults() -> None:
    values, problems = check_input(declared(), {"rounds": 2.5, "tags": "x", "colour": "red"})
    assert [(p.field, p.description) for p in problems] == [
        ("input.topic", "is required (a string: what to research)"),
        ("input.rounds", "must be an integer, got the number 2.5"),
        ("input.tags", "must be an array, got the text 'x'"),
        (
            "input.colour",
            "is not an input of this process; it declares topic, rounds, tags, urgent",
        ),
    ]
    values, problems = check_input(declared(), {"topic": "t", "rounds": 3.0})
    assert problems == []
    assert values == {"topic": "t", "rounds": 3, "urgent": False}
    assert isinstance(values["rounds"], int)  # a Struct's 3.0 is the integer it was sent as


def test_an_event_payload_may_carry_more_than_is_declared() -> None:
    values, problems = check_input(
        declared(), {"topic": "t", "pull_request": 7}, ignore_undeclared=True
    )
    assert problems == []
    assert "pull_request" not in values


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (InputType.STRING, "x", 1),
        (InputType.INTEGER, 3, 3.5),
        (InputType.INTEGER, 2.0**53, 2.0**54),
        (InputType.NUMBER, 1.5, True),
        (InputType.NUMBER, -1, math.nan),
        (InputType.NUMBER, 0, math.inf),
        (InputType.BOOLEAN, False, 0),
        (InputType.OBJECT, {"a": 1}, [1]),
        (InputType.ARRAY, [1], {"a": 1}),
    ],
)
def test_type_rules(kind: InputType, good: object, bad: object) -> None:
    assert type_problem(kind, good) is None
    assert type_problem(kind, bad) is not None


def test_json_schema_of_the_declarations() -> None:
    schema = input_schema(declared())
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["topic"]
    assert schema["properties"]["rounds"] == {"type": "integer", "default": 2}
    assert schema["properties"]["topic"]["description"] == "what to research"


@given(
    st.dictionaries(
        st.sampled_from(["topic", "rounds", "tags", "urgent", "x"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    )
)
def test_check_never_raises_and_accepts_only_what_it_returns(values: dict[str, object]) -> None:
    result, problems = check_input(declared(), values)
    if not problems:
        assert "topic" in result
        assert all(
            type_problem(d.type, result[d.name]) is None for d in declared() if d.name in result
        )
