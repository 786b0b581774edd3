"""The definition service's error family, each with a stable reason clients can switch on."""

from __future__ import annotations

from collections.abc import Sequence

from trinity_platform.errors import (
    Aborted,
    Conflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)

DEFINITION_NOT_FOUND = "DEFINITION_NOT_FOUND"
DEFINITION_NOT_DRAFT = "DEFINITION_NOT_DRAFT"
DEFINITION_NOT_PUBLISHED = "DEFINITION_NOT_PUBLISHED"
DEFINITION_INVALID = "DEFINITION_INVALID"
DEFINITION_UNPARSABLE = "DEFINITION_UNPARSABLE"
STALE_REVISION = "STALE_REVISION"
CONCURRENT_MODIFICATION = "CONCURRENT_MODIFICATION"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"


class DefinitionNotFound(NotFound):
    default_reason = DEFINITION_NOT_FOUND


class DefinitionNotDraft(FailedPrecondition):
    """Only a draft can be edited or published."""

    default_reason = DEFINITION_NOT_DRAFT


class DefinitionNotPublished(FailedPrecondition):
    """Only a published version can be archived."""

    default_reason = DEFINITION_NOT_PUBLISHED


class StaleRevision(Aborted):
    """The caller's expected revision is not the stored one: reread and retry."""

    default_reason = STALE_REVISION


class ConcurrentModification(Conflict):
    """Another transaction changed the definition (or took the version) first.

    Raised by the storage; the unit of work runs the command again on a fresh read.
    """

    default_reason = CONCURRENT_MODIFICATION


class DefinitionInvalid(InvalidArgument):
    """The spec breaks rules of the language; ``violations`` lists every problem."""

    def __init__(self, message: str, violations: Sequence[FieldViolation]) -> None:
        super().__init__(message, violations, reason=DEFINITION_INVALID)


class DefinitionUnparsable(InvalidArgument):
    """The source text or message cannot be read as a process spec."""

    def __init__(self, message: str, violations: Sequence[FieldViolation]) -> None:
        super().__init__(message, violations, reason=DEFINITION_UNPARSABLE)
