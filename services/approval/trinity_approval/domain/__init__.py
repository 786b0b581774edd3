"""The Approval aggregate: pure Python (standard library and the platform's error family)."""

from trinity_approval.domain.errors import (
    ApprovalAlreadyDecided,
    ApprovalHasTimedOut,
    ApprovalNotFound,
    ApprovalWasCancelled,
    DeadlineNotReached,
    InvalidApproval,
    NotAnApprover,
)
from trinity_approval.domain.events import (
    ApprovalCancelled,
    ApprovalDecided,
    ApprovalEvent,
    ApprovalRequested,
    ApprovalTimedOut,
)
from trinity_approval.domain.model import (
    DEFAULT_MAX_REMINDERS,
    MAX_REMINDERS_LIMIT,
    SYSTEM_TIMEOUT,
    Approval,
    ApprovalStatus,
    Artifact,
    Decision,
    TimeoutAction,
)

__all__ = [
    "DEFAULT_MAX_REMINDERS",
    "MAX_REMINDERS_LIMIT",
    "SYSTEM_TIMEOUT",
    "Approval",
    "ApprovalAlreadyDecided",
    "ApprovalCancelled",
    "ApprovalDecided",
    "ApprovalEvent",
    "ApprovalHasTimedOut",
    "ApprovalNotFound",
    "ApprovalRequested",
    "ApprovalStatus",
    "ApprovalTimedOut",
    "ApprovalWasCancelled",
    "Artifact",
    "DeadlineNotReached",
    "Decision",
    "InvalidApproval",
    "NotAnApprover",
    "TimeoutAction",
]
