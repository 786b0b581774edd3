"""The API boundary: request values -> domain values (enums of filters and commands).

Unknown values raise ValueError; the servicer answers them INVALID_ARGUMENT with
the field. The messages themselves are built by :mod:`trinity_definition.codec`.
"""

from __future__ import annotations

from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity_definition.codec import STATUS_TO_PROTO
from trinity_definition.domain.definition import DefinitionStatus, VersionBump
from trinity_platform.enum_maps import reverse

_STATUS_FROM_PROTO = reverse(STATUS_TO_PROTO)
_BUMP_FROM_PROTO = {
    definition_service_pb2.VERSION_BUMP_UNSPECIFIED: VersionBump.MINOR,
    definition_service_pb2.VERSION_BUMP_MINOR: VersionBump.MINOR,
    definition_service_pb2.VERSION_BUMP_MAJOR: VersionBump.MAJOR,
}


def status_from_proto(status: int) -> DefinitionStatus | None:
    """None for UNSPECIFIED (no filter); ValueError for an unknown value."""
    if status == definition_pb2.DEFINITION_STATUS_UNSPECIFIED:
        return None
    try:
        return _STATUS_FROM_PROTO[status]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown status {status}") from None


def bump_from_proto(bump: int) -> VersionBump:
    try:
        return _BUMP_FROM_PROTO[bump]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown version bump {bump}") from None
