"""Random valid definitions survive every translation unchanged.

The specs come from :mod:`trinity_process_model.testing_strategies`. Examples are
bounded, and each drawn spec goes through several translations, so the suite stays fast.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from trinity.process.definition.v1 import definition_pb2 as pb
from trinity_process_model.authoring import (
    dump_process,
    parse_process,
    spec_from_data,
    spec_to_data,
)
from trinity_process_model.model import ProcessSpec
from trinity_process_model.proto_codec import spec_from_proto, spec_to_proto
from trinity_process_model.testing_strategies import process_specs
from trinity_process_model.validation import validate

EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def through_the_wire(message: pb.ProcessSpec) -> pb.ProcessSpec:
    return pb.ProcessSpec.FromString(message.SerializeToString())


@EXAMPLES
@given(process_specs(max_steps=6))
def test_valid_specs_round_trip_through_yaml_and_the_contract(spec: ProcessSpec) -> None:
    assert validate(spec) == []
    text = dump_process(spec)
    assert parse_process(text) == spec, text
    assert dump_process(parse_process(text)) == text
    # The "Done when": YAML → proto → YAML, as the service stores a file.
    stored = through_the_wire(spec_to_proto(parse_process(text)))
    assert dump_process(spec_from_proto(stored)) == text


@EXAMPLES
@given(process_specs(max_steps=6))
def test_valid_specs_round_trip_through_json_and_proto(spec: ProcessSpec) -> None:
    text = dump_process(spec, "json")
    assert parse_process(text) == spec, text
    assert parse_process(text, "json") == spec
    assert spec_from_data(spec_to_data(spec)) == spec
    message = spec_to_proto(spec)
    assert spec_from_proto(through_the_wire(message)) == spec
    assert spec_to_proto(spec_from_proto(message)) == message
