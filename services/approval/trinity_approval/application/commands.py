"""What callers ask of the service, as plain values (one input object per call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from trinity_approval.domain import ApprovalStatus, Artifact, Decision, TimeoutAction

# A position in a listing: the sort key of the last item returned (time, id).
Cursor = tuple[datetime, str]


@dataclass(frozen=True)
class RequestApproval:
    request_id: str
    execution_id: str
    step_id: str
    iteration: int
    title: str
    approvers: tuple[str, ...]
    timeout: timedelta
    on_timeout: TimeoutAction
    artifacts: tuple[Artifact, ...] = ()
    reminder_interval: timedelta | None = None
    max_reminders: int = 0


@dataclass(frozen=True)
class SubmitDecision:
    request_id: str
    approval_id: str
    # The authenticated caller (from the auth interceptor), never a request field.
    principal: str
    decision: Decision
    comment: str = ""


@dataclass(frozen=True)
class CancelApproval:
    request_id: str
    approval_id: str
    reason: str = ""


@dataclass(frozen=True)
class ListPendingApprovals:
    """Pending approvals, oldest deadline first; ``approver`` empty: all of them."""

    approver: str
    page_size: int
    after: Cursor | None = None


@dataclass(frozen=True)
class ListApprovals:
    """The approvals of an execution, oldest first; ``status`` None: any."""

    execution_id: str
    status: ApprovalStatus | None
    page_size: int
    after: Cursor | None = None
