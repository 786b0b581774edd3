"""Messages at rest and on the wire: the domain <-> the protobuf contracts (the stored
spec, the resource message of responses and facts).

Specs go through the shared codec of the process-model library, so the CLI, the
execution engine and this service read and write one and the same format. Requests
are read by :mod:`trinity_definition.api.translate`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from trinity.process.definition.v1 import definition_pb2
from trinity_definition.domain.definition import DefinitionStatus, DefinitionVersion
from trinity_definition.domain.errors import DefinitionUnparsable
from trinity_platform.enum_maps import enum_map
from trinity_platform.errors import FieldViolation
from trinity_process_model.authoring import AuthoringError
from trinity_process_model.model import ProcessSpec
from trinity_process_model.proto_codec import spec_from_proto, spec_to_proto

STATUS_TO_PROTO = enum_map(DefinitionStatus, definition_pb2.DefinitionStatus, "DEFINITION_STATUS_")


def status_to_proto(status: DefinitionStatus) -> int:
    return STATUS_TO_PROTO[status]


def violations_of(error: AuthoringError) -> list[FieldViolation]:
    return [FieldViolation(v.field, v.description) for v in error.violations]


def _unreadable(what: str, error: AuthoringError) -> DefinitionUnparsable:
    violations = violations_of(error)
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
    return DefinitionUnparsable(f"{what}: {summary}", violations)


def spec_of(message: definition_pb2.ProcessSpec) -> ProcessSpec:
    """The model of a spec message; raises DefinitionUnparsable (e.g. a step without a kind)."""
    try:
        return spec_from_proto(message)
    except AuthoringError as error:
        raise _unreadable("the spec cannot be read", error) from None


def spec_message(spec: ProcessSpec) -> definition_pb2.ProcessSpec:
    """The contract of a spec; raises DefinitionUnparsable for values the contract cannot
    hold (e.g. a negative count from a hand-written file)."""
    try:
        return spec_to_proto(spec)
    except AuthoringError as error:
        raise _unreadable("the spec cannot be stored", error) from None


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return ts


def definition_message(
    definition: DefinitionVersion, spec: definition_pb2.ProcessSpec | None = None
) -> definition_pb2.ProcessDefinition:
    """The resource message; ``spec`` may pass an already encoded spec."""
    message = definition_pb2.ProcessDefinition(
        id=definition.id,
        name=definition.name,
        version=str(definition.version) if definition.version else "",
        status=status_to_proto(definition.status),  # type: ignore[arg-type]
        spec=spec if spec is not None else spec_message(definition.spec),
        revision=definition.revision,
        created_by=definition.created_by,
        create_time=timestamp(definition.created_at),
        update_time=timestamp(definition.updated_at),
        publish_time=timestamp(definition.published_at),
        archive_time=timestamp(definition.archived_at),
    )
    return message
