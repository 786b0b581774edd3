"""Domain enums ↔ protobuf enums, matched by name and checked complete when built.

Every service translates its domain enums (``StepKind.AGENT_TASK``) to the contract's
(``STEP_KIND_AGENT_TASK``) and back. Writing those tables by hand drifted: a member
added on one side was missing on the other and failed at run time. ``enum_map`` builds
the table from the names instead, at import, and refuses to build an incomplete one,
so a service with a gap does not start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # the stubs' generic name; at run time the class is EnumTypeWrapper
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

E = TypeVar("E", bound=Enum)
V = TypeVar("V", bound=int)


class EnumMapError(ValueError):
    """A domain enum and a protobuf enum do not match member for member."""


def enum_map(
    domain: type[E],
    proto: _EnumTypeWrapper[V],  # the generated wrapper, e.g. execution_pb2.StepKind
    prefix: str,
    *,
    renames: Mapping[E, str] | None = None,
    proto_only: Iterable[str] = (),
) -> dict[E, V]:
    """``{member: number}`` for every member of ``domain``.

    ``proto`` is the generated enum wrapper (``execution_pb2.StepKind``); each member
    maps to ``prefix + NAME`` (``renames`` gives another name where the two sides differ).
    Every protobuf member but ``<prefix>UNSPECIFIED`` and ``proto_only`` must be reached.
    """
    renames = renames or {}
    table: dict[E, V] = {}
    missing = []
    for member in domain:
        name = prefix + renames.get(member, member.name)
        try:
            table[member] = proto.Value(name)
        except ValueError:
            missing.append(name)
    if missing:
        raise EnumMapError(
            f"{proto.DESCRIPTOR.full_name} has no {', '.join(missing)} for {domain.__name__}"
        )
    reached = {proto.Name(number) for number in table.values()}
    spare = set(proto.keys()) - reached - {f"{prefix}UNSPECIFIED"} - set(proto_only)
    if spare:
        raise EnumMapError(
            f"{domain.__name__} has no member for {', '.join(sorted(spare))} of "
            f"{proto.DESCRIPTOR.full_name}"
        )
    return table


def reverse(table: Mapping[E, V]) -> dict[V, E]:
    """``{number: member}`` of a table made by :func:`enum_map` (one member per number)."""
    inverted = {number: member for member, number in table.items()}
    if len(inverted) != len(table):
        raise EnumMapError("two members map to one protobuf number")
    return inverted
