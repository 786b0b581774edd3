"""The approval error family. Each class fixes a gRPC status (through its platform
base class) and a stable ``reason`` clients can switch on."""

from __future__ import annotations

from trinity_platform.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)


class ApprovalNotFound(NotFound):
    default_reason = "APPROVAL_NOT_FOUND"

    def __init__(self, approval_id: str) -> None:
        super().__init__(
            f"approval {approval_id!r} not found", metadata={"approval_id": approval_id}
        )


class NotAnApprover(PermissionDenied):
    """The caller is not one of the approval's approvers."""

    default_reason = "NOT_AN_APPROVER"


class ApprovalAlreadyDecided(FailedPrecondition):
    """A decision is final."""

    default_reason = "APPROVAL_ALREADY_DECIDED"


class ApprovalWasCancelled(FailedPrecondition):
    default_reason = "APPROVAL_CANCELLED"


class ApprovalHasTimedOut(FailedPrecondition):
    """The deadline passed and no reminder was left (on_timeout NOTIFY)."""

    default_reason = "APPROVAL_TIMED_OUT"


class DeadlineNotReached(FailedPrecondition):
    default_reason = "DEADLINE_NOT_REACHED"


class InvalidApproval(InvalidArgument):
    """An approval cannot be requested with these values."""

    default_reason = "INVALID_APPROVAL"
