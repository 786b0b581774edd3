"""The boundary translators: enums, timestamps, and specs the contract cannot hold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trinity.process.definition.v1 import definition_pb2 as d
from trinity.process.definition.v1 import definition_service_pb2 as pb
from trinity_definition.api.translate import bump_from_proto, status_from_proto
from trinity_definition.codec import definition_message, spec_message, spec_of
from trinity_definition.domain.definition import DefinitionStatus, DefinitionVersion, VersionBump
from trinity_definition.domain.errors import DefinitionUnparsable
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, RetryPolicy, Step


def test_enums() -> None:
    assert status_from_proto(d.DEFINITION_STATUS_UNSPECIFIED) is None
    assert status_from_proto(d.DEFINITION_STATUS_ARCHIVED) is DefinitionStatus.ARCHIVED
    assert bump_from_proto(pb.VERSION_BUMP_UNSPECIFIED) is VersionBump.MINOR
    assert bump_from_proto(pb.VERSION_BUMP_MAJOR) is VersionBump.MAJOR
    with pytest.raises(ValueError):
        status_from_proto(42)
    with pytest.raises(ValueError):
        bump_from_proto(42)


def test_specs_the_contract_cannot_hold_are_invalid_arguments() -> None:
    spec = ProcessSpec(
        name="p",
        steps=(Step("a", AgentTaskConfig("x", "y"), retry=RetryPolicy(max_attempts=-1)),),
    )
    with pytest.raises(DefinitionUnparsable) as caught:
        spec_message(spec)
    assert caught.value.violations[0].field.startswith("steps[0].retry")
    with pytest.raises(DefinitionUnparsable):
        spec_of(d.ProcessSpec(name="p", steps=[d.Step(id="a")]))


def test_definition_message_carries_everything() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    spec = ProcessSpec(name="p", steps=(Step("a", AgentTaskConfig("x", "y")),))
    definition = DefinitionVersion.create_draft("id-1", spec, "ann", now)
    message = definition_message(definition)
    assert (message.id, message.name, message.version, message.revision) == ("id-1", "p", "", 1)
    assert message.status == d.DEFINITION_STATUS_DRAFT and message.created_by == "ann"
    assert message.create_time.ToDatetime(tzinfo=UTC) == now
    assert not message.HasField("publish_time")
    assert spec_of(message.spec) == spec
