"""The API boundary: protobuf requests → commands, or INVALID_ARGUMENT with one field
violation per problem (never INTERNAL for bad input); page tokens. The messages
themselves are built by :mod:`trinity_approval.codec`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity.process.common.v1 import enums_pb2
from trinity_approval.application.commands import (
    CancelApproval,
    Cursor,
    ListApprovals,
    ListPendingApprovals,
    RequestApproval,
    SubmitDecision,
)
from trinity_approval.codec import (
    DECISION_FROM_PROTO,
    STATUS_FROM_PROTO,
    TIMEOUT_ACTION_FROM_PROTO,
)
from trinity_approval.domain import MAX_REMINDERS_LIMIT, Artifact, TimeoutAction
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_platform.pagination import encode_page_token, page_request

MAX_KEY = 128
MAX_ID = 64
MAX_STEP_ID = 255
MAX_APPROVER = 254
MAX_APPROVERS = 100
MAX_TITLE = 1000
MAX_ARTIFACTS = 100
MAX_ARTIFACT_NAME = 255
MAX_REFERENCE = 2048
MAX_ARTIFACT_TEXT = 100_000
MAX_COMMENT = 10_000
MAX_REASON = 2000
MAX_TIMEOUT = timedelta(days=3650)
# The definition language's default (trinity_process_model.HumanApprovalConfig).
DEFAULT_ON_TIMEOUT = TimeoutAction.REJECT


class _Checks:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def text(self, field: str, value: str, limit: int, *, required: bool = False) -> str:
        if "\x00" in value:
            self.add(field, "must not contain NUL characters")
        elif required and not value.strip():
            self.add(field, "is required")
        elif len(value) > limit:
            self.add(field, f"must be at most {limit} characters")
        return value

    def duration(
        self, field: str, value: Duration, *, required: bool, present: bool
    ) -> timedelta | None:
        if not present:
            if required:
                self.add(field, "is required")
            return None
        if value.seconds < 0 or value.nanos < 0 or value.nanos > 999_999_999:
            self.add(field, "must be a positive duration")
            return None
        result = timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
        if result <= timedelta(0):
            self.add(field, "must be positive (at least 1 microsecond)")
            return None
        if result > MAX_TIMEOUT:
            self.add(field, f"must be at most {MAX_TIMEOUT.days} days")
            return None
        return result

    def raise_if_any(self, message: str) -> None:
        if self.violations:
            raise InvalidArgument(message, self.violations)


def request_approval(request: api.RequestApprovalRequest) -> RequestApproval:
    checks = _Checks()
    checks.text("request_id", request.request_id, MAX_KEY, required=True)
    checks.text("execution_id", request.execution_id, MAX_ID, required=True)
    checks.text("step_id", request.step_id, MAX_STEP_ID, required=True)
    checks.text("title", request.title, MAX_TITLE)
    approvers = _approvers(checks, request.approvers)
    timeout = checks.duration(
        "timeout", request.timeout, required=True, present=request.HasField("timeout")
    )
    reminder_interval = checks.duration(
        "reminder_interval",
        request.reminder_interval,
        required=False,
        present=request.HasField("reminder_interval"),
    )
    on_timeout = DEFAULT_ON_TIMEOUT
    if request.on_timeout != enums_pb2.TIMEOUT_ACTION_UNSPECIFIED:
        found = TIMEOUT_ACTION_FROM_PROTO.get(request.on_timeout)
        if found is None:
            checks.add("on_timeout", f"unknown value {request.on_timeout}")
        else:
            on_timeout = found
    if request.max_reminders > MAX_REMINDERS_LIMIT:
        checks.add("max_reminders", f"must be at most {MAX_REMINDERS_LIMIT}")
    artifacts = _artifacts(checks, request.artifacts)
    checks.raise_if_any("invalid RequestApproval request")
    assert timeout is not None
    return RequestApproval(
        request_id=request.request_id,
        execution_id=request.execution_id,
        step_id=request.step_id,
        iteration=request.iteration,
        title=request.title,
        approvers=approvers,
        timeout=timeout,
        on_timeout=on_timeout,
        artifacts=artifacts,
        reminder_interval=reminder_interval,
        max_reminders=request.max_reminders,
    )


def _approvers(checks: _Checks, values: Sequence[str]) -> tuple[str, ...]:
    if not values:
        checks.add("approvers", "needs at least one approver")
    if len(values) > MAX_APPROVERS:
        checks.add("approvers", f"must list at most {MAX_APPROVERS} approvers")
    seen: set[str] = set()
    for index, value in enumerate(values):
        field = f"approvers[{index}]"
        normalized = value.strip().casefold()
        if not normalized:
            checks.add(field, "must not be blank")
        elif "\x00" in value:
            checks.add(field, "must not contain NUL characters")
        elif len(value.strip()) > MAX_APPROVER:
            checks.add(field, f"must be at most {MAX_APPROVER} characters")
        elif normalized in seen:
            checks.add(field, "is listed twice")
        elif normalized.startswith("system:"):
            checks.add(field, "system principals cannot approve")
        seen.add(normalized)
    return tuple(v.strip() for v in values)


def _artifacts(checks: _Checks, values: Sequence[approval_pb2.Artifact]) -> tuple[Artifact, ...]:
    if len(values) > MAX_ARTIFACTS:
        checks.add("artifacts", f"must list at most {MAX_ARTIFACTS} artifacts")
    for index, artifact in enumerate(values):
        field = f"artifacts[{index}]"
        checks.text(f"{field}.name", artifact.name, MAX_ARTIFACT_NAME)
        checks.text(f"{field}.reference", artifact.reference, MAX_REFERENCE)
        checks.text(f"{field}.text", artifact.text, MAX_ARTIFACT_TEXT)
        if not (artifact.name or artifact.reference or artifact.text):
            checks.add(field, "needs a name, a reference or a text")
    return tuple(Artifact(a.name, a.reference, a.text) for a in values)


def submit_decision(request: api.SubmitDecisionRequest, principal: str) -> SubmitDecision:
    checks = _Checks()
    checks.text("request_id", request.request_id, MAX_KEY)
    checks.text("approval_id", request.approval_id, MAX_ID, required=True)
    checks.text("comment", request.comment, MAX_COMMENT)
    decision = DECISION_FROM_PROTO.get(request.decision)
    if decision is None:
        checks.add(
            "decision",
            "is required"
            if request.decision == approval_pb2.DECISION_UNSPECIFIED
            else f"unknown value {request.decision}",
        )
    checks.raise_if_any("invalid SubmitDecision request")
    assert decision is not None
    return SubmitDecision(
        request_id=request.request_id,
        approval_id=request.approval_id,
        principal=principal,
        decision=decision,
        comment=request.comment,
    )


def cancel_approval(request: api.CancelApprovalRequest) -> CancelApproval:
    checks = _Checks()
    checks.text("request_id", request.request_id, MAX_KEY)
    checks.text("approval_id", request.approval_id, MAX_ID, required=True)
    checks.text("reason", request.reason, MAX_REASON)
    checks.raise_if_any("invalid CancelApproval request")
    return CancelApproval(request.request_id, request.approval_id, request.reason)


def approval_id(request: api.GetApprovalRequest) -> str:
    checks = _Checks()
    checks.text("approval_id", request.approval_id, MAX_ID, required=True)
    checks.raise_if_any("invalid GetApproval request")
    return request.approval_id


# ---------------------------------------------------------------------- pagination


def _cursor(after: tuple[object, ...] | None) -> Cursor | None:
    """A page token's key (epoch microseconds, id) → (time, id)."""
    if after is None:
        return None
    try:
        micros, last_id = after
        if not isinstance(micros, int) or not isinstance(last_id, str):
            raise TypeError
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros), last_id
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(
            "invalid page request",
            [FieldViolation("page_token", "is not a token this service issued")],
        ) from None


def page_token(cursor: Cursor | None, filters: Sequence[object]) -> str:
    if cursor is None:
        return ""
    time, last_id = cursor
    micros = (time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return encode_page_token([micros, last_id], filters)


def pending_filters(approver: str) -> list[object]:
    return ["pending", approver.strip().casefold()]


def list_pending(request: api.ListPendingApprovalsRequest) -> ListPendingApprovals:
    checks = _Checks()
    checks.text("approver", request.approver, MAX_APPROVER)
    checks.raise_if_any("invalid ListPendingApprovals request")
    page = page_request(request.page_size, request.page_token, pending_filters(request.approver))
    return ListPendingApprovals(request.approver.strip(), page.size, _cursor(page.after))


def execution_filters(execution_id: str, status: int) -> list[object]:
    return ["execution", execution_id, status]


def list_approvals(request: api.ListApprovalsRequest) -> ListApprovals:
    checks = _Checks()
    checks.text("execution_id", request.execution_id, MAX_ID, required=True)
    status = None
    if request.status != approval_pb2.APPROVAL_STATUS_UNSPECIFIED:
        status = STATUS_FROM_PROTO.get(request.status)
        if status is None:
            checks.add("status", f"unknown value {request.status}")
    checks.raise_if_any("invalid ListApprovals request")
    page = page_request(
        request.page_size,
        request.page_token,
        execution_filters(request.execution_id, request.status),
    )
    return ListApprovals(request.execution_id, status, page.size, _cursor(page.after))
