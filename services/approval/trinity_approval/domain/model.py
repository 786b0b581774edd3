"""The Approval aggregate: one human-in-the-loop decision with approvers and a deadline.

State machine::

    PENDING ──decide(approver)──────────────► APPROVED | REJECTED | NEEDS_CHANGES
    PENDING ──time_out, REJECT───────────────► REJECTED   (decided by system:timeout)
    PENDING ──time_out, AUTO_APPROVE─────────► APPROVED   (decided by system:timeout)
    PENDING ──time_out, NOTIFY, reminder left► PENDING    (new deadline)
    PENDING ──time_out, NOTIFY, none left────► TIMED_OUT
    PENDING ──cancel─────────────────────────► CANCELLED

Every other state is final. Each change appends events to ``events``; the
repository bumps ``version`` when it saves (optimistic concurrency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from trinity_approval.domain.errors import (
    ApprovalAlreadyDecided,
    ApprovalHasTimedOut,
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
from trinity_platform.errors import FieldViolation

SYSTEM_TIMEOUT = "system:timeout"
DEFAULT_MAX_REMINDERS = 3
MAX_REMINDERS_LIMIT = 100


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    NEEDS_CHANGES = "needs_changes"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_CHANGES = "request_changes"


class TimeoutAction(StrEnum):
    NOTIFY = "notify"
    REJECT = "reject"
    AUTO_APPROVE = "auto_approve"


_OUTCOME = {
    Decision.APPROVE: ApprovalStatus.APPROVED,
    Decision.REJECT: ApprovalStatus.REJECTED,
    Decision.REQUEST_CHANGES: ApprovalStatus.NEEDS_CHANGES,
}
_DECIDED = frozenset(_OUTCOME.values())


@dataclass(frozen=True)
class Artifact:
    """Something the approvers review: a reference (URL, evidence id) and/or rendered text."""

    name: str
    reference: str = ""
    text: str = ""


def same_principal(a: str, b: str) -> bool:
    """Approvers and principals compare without surrounding blanks and case."""
    return a.strip().casefold() == b.strip().casefold()


@dataclass
class Approval:
    id: str
    execution_id: str
    step_id: str
    iteration: int
    title: str
    approvers: tuple[str, ...]
    deadline: datetime
    on_timeout: TimeoutAction
    artifacts: tuple[Artifact, ...]
    created_at: datetime
    reminder_interval: timedelta | None = None
    max_reminders: int = 0
    status: ApprovalStatus = ApprovalStatus.PENDING
    decision: Decision | None = None
    decided_by: str = ""
    comment: str = ""
    decided_at: datetime | None = None
    # The idempotency key of the decision, so a retried decision is recognised.
    decision_request_id: str = ""
    reminders_sent: int = 0
    cancel_reason: str = ""
    version: int = 0
    events: list[ApprovalEvent] = field(default_factory=list, compare=False, repr=False)

    # ------------------------------------------------------------------ creation

    @classmethod
    def request(
        cls,
        *,
        id: str,
        execution_id: str,
        step_id: str,
        iteration: int,
        title: str,
        approvers: tuple[str, ...],
        timeout: timedelta,
        on_timeout: TimeoutAction,
        artifacts: tuple[Artifact, ...] = (),
        reminder_interval: timedelta | None = None,
        max_reminders: int = 0,
        now: datetime,
    ) -> Approval:
        """A new pending approval due at ``now + timeout``; raises ApprovalRequested."""
        cleaned = tuple(a.strip() for a in approvers)
        violations = _check_request(
            execution_id, step_id, cleaned, timeout, reminder_interval, max_reminders
        )
        if violations:
            raise InvalidApproval("the approval cannot be requested", violations)
        if on_timeout is TimeoutAction.NOTIFY:
            reminder_interval = reminder_interval or timeout
            max_reminders = max_reminders or DEFAULT_MAX_REMINDERS
        else:
            reminder_interval, max_reminders = None, 0
        approval = cls(
            id=id,
            execution_id=execution_id,
            step_id=step_id,
            iteration=iteration,
            title=title,
            approvers=cleaned,
            deadline=now + timeout,
            on_timeout=on_timeout,
            artifacts=tuple(artifacts),
            created_at=now,
            reminder_interval=reminder_interval,
            max_reminders=max_reminders,
        )
        approval._record(
            ApprovalRequested,
            now,
            title=title,
            approvers=approval.approvers,
            deadline=approval.deadline,
            artifacts=approval.artifacts,
        )
        return approval

    # ------------------------------------------------------------------ guards

    @property
    def is_pending(self) -> bool:
        return self.status is ApprovalStatus.PENDING

    def is_approver(self, principal: str) -> bool:
        return any(same_principal(principal, approver) for approver in self.approvers)

    def check_may_decide(self, principal: str) -> None:
        if not principal or not self.is_approver(principal):
            raise NotAnApprover(
                f"{principal!r} is not an approver of approval {self.id!r}",
                metadata={"approval_id": self.id, "principal": principal},
            )

    def check_is_pending(self) -> None:
        metadata = {"approval_id": self.id, "status": self.status.value}
        if self.status in _DECIDED:
            raise ApprovalAlreadyDecided(
                f"approval {self.id!r} was already decided ({self.status.value} by "
                f"{self.decided_by})",
                metadata=metadata,
            )
        if self.status is ApprovalStatus.CANCELLED:
            raise ApprovalWasCancelled(f"approval {self.id!r} was cancelled", metadata=metadata)
        if self.status is ApprovalStatus.TIMED_OUT:
            raise ApprovalHasTimedOut(f"approval {self.id!r} timed out", metadata=metadata)

    # ------------------------------------------------------------------ commands

    def decide(
        self,
        *,
        principal: str,
        decision: Decision,
        comment: str,
        now: datetime,
        request_id: str = "",
    ) -> bool:
        """Record an approver's decision. Returns False (and changes nothing) when it
        repeats this approver's decision under the same ``request_id``."""
        self.check_may_decide(principal)
        if (
            request_id
            and not self.is_pending
            and self.decision_request_id == request_id
            and same_principal(self.decided_by, principal)
            and self.decision is decision
            and self.comment == comment
        ):
            return False
        self.check_is_pending()
        self._decide(decision, principal.strip(), comment, now, request_id)
        return True

    def time_out(self, now: datetime) -> None:
        """The deadline passed: act as ``on_timeout`` says."""
        self.check_is_pending()
        if now < self.deadline:
            raise DeadlineNotReached(
                f"approval {self.id!r} is due at {self.deadline.isoformat()}",
                metadata={"approval_id": self.id},
            )
        if self.on_timeout is TimeoutAction.NOTIFY:
            self._remind_or_expire(now)
            return
        self._record(ApprovalTimedOut, now, action_taken=self.on_timeout)
        decision = (
            Decision.APPROVE if self.on_timeout is TimeoutAction.AUTO_APPROVE else (Decision.REJECT)
        )
        comment = (
            "approved on the approvers' behalf: the deadline passed"
            if decision is Decision.APPROVE
            else "rejected on the approvers' behalf: the deadline passed"
        )
        self._decide(decision, SYSTEM_TIMEOUT, comment, now, "")

    def cancel(self, reason: str, now: datetime) -> bool:
        """Cancel a pending approval; False (no change) when it already was cancelled."""
        if self.status is ApprovalStatus.CANCELLED:
            return False
        self.check_is_pending()
        self.status = ApprovalStatus.CANCELLED
        self.cancel_reason = reason
        self.decided_at = now
        self._record(ApprovalCancelled, now, reason=reason)
        return True

    # ------------------------------------------------------------------ internals

    def _remind_or_expire(self, now: datetime) -> None:
        if self.reminders_sent < self.max_reminders:
            self.reminders_sent += 1
            interval = self.reminder_interval or timedelta(0)
            self.deadline = now + interval
            self._record(
                ApprovalTimedOut,
                now,
                action_taken=TimeoutAction.NOTIFY,
                reminder=self.reminders_sent,
                new_deadline=self.deadline,
                approvers=self.approvers,
            )
            return
        self.status = ApprovalStatus.TIMED_OUT
        self.decided_at = now
        self._record(ApprovalTimedOut, now, action_taken=TimeoutAction.NOTIFY)

    def _decide(
        self, decision: Decision, decided_by: str, comment: str, now: datetime, request_id: str
    ) -> None:
        self.status = _OUTCOME[decision]
        self.decision = decision
        self.decided_by = decided_by
        self.comment = comment
        self.decided_at = now
        self.decision_request_id = request_id
        self._record(
            ApprovalDecided, now, decision=decision, decided_by=decided_by, comment=comment
        )

    def _record(self, event_type: type[ApprovalEvent], now: datetime, **fields: object) -> None:
        self.events.append(
            event_type(
                approval_id=self.id,
                execution_id=self.execution_id,
                step_id=self.step_id,
                iteration=self.iteration,
                occurred_at=now,
                **fields,
            )
        )


def _check_request(
    execution_id: str,
    step_id: str,
    approvers: tuple[str, ...],
    timeout: timedelta,
    reminder_interval: timedelta | None,
    max_reminders: int,
) -> list[FieldViolation]:
    violations = []
    if not execution_id:
        violations.append(FieldViolation("execution_id", "is required"))
    if not step_id:
        violations.append(FieldViolation("step_id", "is required"))
    if not approvers:
        violations.append(FieldViolation("approvers", "needs at least one approver"))
    seen: set[str] = set()
    for index, approver in enumerate(approvers):
        if not approver:
            violations.append(FieldViolation(f"approvers[{index}]", "must not be blank"))
        elif approver.casefold() in seen:
            violations.append(FieldViolation(f"approvers[{index}]", "is listed twice"))
        elif approver.casefold() == SYSTEM_TIMEOUT:
            violations.append(FieldViolation(f"approvers[{index}]", "is reserved"))
        seen.add(approver.casefold())
    if timeout <= timedelta(0):
        violations.append(FieldViolation("timeout", "must be positive"))
    if reminder_interval is not None and reminder_interval <= timedelta(0):
        violations.append(FieldViolation("reminder_interval", "must be positive"))
    if not 0 <= max_reminders <= MAX_REMINDERS_LIMIT:
        violations.append(
            FieldViolation("max_reminders", f"must lie between 0 and {MAX_REMINDERS_LIMIT}")
        )
    return violations
