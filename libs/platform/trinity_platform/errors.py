"""The error family every service raises from its domain and application code.

Pure standard library: domain modules may import it freely. The gRPC edge maps
each class to a status code with typed details (see :mod:`trinity_platform.grpc_errors`).
Each error carries a stable, UPPER_SNAKE ``reason`` that clients can switch on, and
may carry ``retry_after`` (seconds): the caller may retry the same request after
that delay (sent as ``google.rpc.RetryInfo``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request (``field`` is a dotted path, e.g. ``steps[2].name``)."""

    field: str
    description: str


class TrinityError(Exception):
    """Base of the family. Subclasses fix the gRPC status code."""

    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(TrinityError):
    """The request is malformed; ``violations`` say which fields and why."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: list[FieldViolation] = list(violations)


class NotFound(TrinityError):
    default_reason = "NOT_FOUND"


class AlreadyExists(TrinityError):
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(TrinityError):
    """The request is valid but the system is not in a state that allows it."""

    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(TrinityError):
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(TrinityError):
    default_reason = "UNAUTHENTICATED"


class Aborted(TrinityError):
    """A concurrency conflict (optimistic version, serialization, deadlock): retry."""

    default_reason = "CONCURRENT_MODIFICATION"


class Conflict(Aborted):
    """The transaction lost a race with a concurrent one (a version moved, a unique
    key was taken meanwhile): the unit of work runs the command again on fresh state,
    and answers ``ABORTED`` only when every attempt lost."""

    default_reason = "CONCURRENT_MODIFICATION"


class Unavailable(TrinityError):
    """A dependency is temporarily unreachable; the caller may retry."""

    default_reason = "UNAVAILABLE"


class ResourceExhausted(TrinityError):
    """A quota or budget is used up; with ``retry_after``, a temporary overload."""

    default_reason = "RESOURCE_EXHAUSTED"


__all__ = [
    "Aborted",
    "AlreadyExists",
    "Conflict",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TrinityError",
    "Unauthenticated",
    "Unavailable",
]
