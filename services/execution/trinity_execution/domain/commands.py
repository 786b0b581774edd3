"""What the engine asks other services to do, as data. The dispatcher sends them.

Every command has a stable idempotency ``key`` derived from the execution, step,
iteration and attempt, so sending it again is harmless.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from trinity_process_model.model import ActionKind, Channel, Money, TimeoutAction


@dataclass(frozen=True)
class StepRef:
    """The step attempt a command belongs to."""

    execution_id: str
    step_id: str
    iteration: int
    attempt: int


class WorkKind(StrEnum):
    AGENT_TASK = "agent_task"
    TOOL_RUN = "tool_run"
    NOTIFICATION = "notification"


@dataclass(frozen=True)
class AgentTaskWork:
    agent: str
    message: str
    max_cost: Money | None = None


@dataclass(frozen=True)
class ToolRunWork:
    action: ActionKind
    arguments: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NotificationWork:
    channel: Channel
    target: str
    message: str
    subject: str = ""


WorkPayload = AgentTaskWork | ToolRunWork | NotificationWork

_KIND_OF_PAYLOAD: dict[type, WorkKind] = {
    AgentTaskWork: WorkKind.AGENT_TASK,
    ToolRunWork: WorkKind.TOOL_RUN,
    NotificationWork: WorkKind.NOTIFICATION,
}


@dataclass(frozen=True, kw_only=True)
class RequestWork:
    """Ask the work service for an agent task, a tool run or a notification.

    ``correlation`` is None for fire-and-forget notifications (process outputs,
    informed parties): their outcome does not drive the execution.
    """

    key: str
    payload: WorkPayload
    correlation: StepRef | None = None
    timeout: timedelta | None = None

    @property
    def kind(self) -> WorkKind:
        return _KIND_OF_PAYLOAD[type(self.payload)]


@dataclass(frozen=True)
class ApprovalArtifact:
    name: str
    text: str
    reference: str = ""


@dataclass(frozen=True, kw_only=True)
class RequestApproval:
    key: str
    correlation: StepRef
    title: str
    approvers: tuple[str, ...]
    artifacts: tuple[ApprovalArtifact, ...] = ()
    timeout: timedelta | None = None
    on_timeout: TimeoutAction = TimeoutAction.REJECT
    reminder_interval: timedelta | None = None
    max_reminders: int = 0


@dataclass(frozen=True)
class CancelWork:
    """Cancel the work requested with ``key``."""

    key: str
    reason: str = ""


@dataclass(frozen=True)
class CancelApproval:
    key: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class OpenMessageSubscription:
    """Wait for message ``message_name`` with ``correlation_key`` for this step attempt
    (kept by the execution service itself, in the decision's transaction)."""

    key: str
    correlation: StepRef
    message_name: str
    correlation_key: str


@dataclass(frozen=True)
class CloseMessageSubscription:
    """The step attempt no longer waits for its message."""

    key: str


@dataclass(frozen=True, kw_only=True)
class StartChildExecution:
    """Start ``process`` as a child execution for a sub_process step attempt. The child's
    id and its TriggerProcess idempotency key both come from ``key``, so sending this
    again (a redelivered decision, a crash before the dispatch was marked done) starts
    one child, never two."""

    key: str
    correlation: StepRef
    child_execution_id: str
    process: str
    version: str
    input: dict[str, str]
    triggered_by: str
    trigger_kind: str
    depth: int


@dataclass(frozen=True)
class CancelChildExecution:
    """Cancel the child started by the StartChildExecution with ``key`` (``compensate``:
    undoing its completed steps first, because the parent compensates)."""

    key: str
    reason: str = ""
    compensate: bool = False


@dataclass(frozen=True, kw_only=True)
class NotifyParent:
    """This child execution ended: continue the parent step attempt waiting for it."""

    key: str
    parent_execution_id: str
    request: str
    child_execution_id: str
    status: str
    output: str | None = None
    structured: dict[str, Any] | None = None
    cost: Money | None = None
    error_code: str = ""
    error_message: str = ""


class TimerPurpose(StrEnum):
    STEP_TIMER = "step_timer"
    STEP_TIMEOUT = "step_timeout"
    RETRY_BACKOFF = "retry_backoff"
    FOR_EACH_LOAD = "for_each_load"
    """Decide again on a for_each with all its items and results loaded (items.py)."""


_PURPOSES = frozenset(p.value for p in TimerPurpose)


@dataclass(frozen=True, kw_only=True)
class StartTimer:
    timer_id: str
    fire_at: datetime
    purpose: TimerPurpose
    correlation: StepRef


@dataclass(frozen=True)
class CancelTimer:
    timer_id: str


Command = (
    RequestWork
    | RequestApproval
    | CancelWork
    | CancelApproval
    | StartTimer
    | CancelTimer
    | OpenMessageSubscription
    | CloseMessageSubscription
    | StartChildExecution
    | CancelChildExecution
    | NotifyParent
)


_CHILD_NAMESPACE = uuid.UUID("5b0c8f52-6f0e-4d55-9a57-0c3c2a1e8d11")


def child_execution_id(key: str) -> str:
    """The id of the child execution a sub_process step attempt starts (derived from its
    request key: the same attempt always names the same child)."""
    return str(uuid.uuid5(_CHILD_NAMESPACE, key))


def request_key(execution_id: str, step_id: str, iteration: int, attempt: int) -> str:
    """Idempotency key of a step attempt's work or approval request."""
    return f"{execution_id}/{step_id}/{iteration}/{attempt}"


def timer_id(execution_id: str, step_id: str, iteration: int, attempt: int, purpose: str) -> str:
    return f"{request_key(execution_id, step_id, iteration, attempt)}/{purpose}"


def parse_request_key(execution_id: str, key: str) -> tuple[str, int, int] | None:
    """(step id, iteration, attempt) of a key made by request_key, else None."""
    prefix = f"{execution_id}/"
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def parse_timer_id(execution_id: str, timer: str) -> tuple[str, int, int, str] | None:
    """(step id, iteration, attempt, purpose) of an id made by timer_id, else None."""
    head, _, purpose = timer.rpartition("/")
    parsed = parse_request_key(execution_id, head)
    if parsed is None or purpose not in _PURPOSES:
        return None
    return (*parsed, purpose)
