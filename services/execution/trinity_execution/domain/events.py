"""Events the engine decides on. Each carries `now` (UTC): the engine never reads a clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.state import ParentLink, TriggerKind
from trinity_process_model.model import Money


@dataclass(frozen=True, kw_only=True)
class StartExecution:
    now: datetime
    execution_id: str
    input: dict[str, Any] = field(default_factory=dict)
    triggered_by: str = ""
    trigger_kind: TriggerKind = TriggerKind.MANUAL
    parent: ParentLink | None = None


@dataclass(frozen=True, kw_only=True)
class WorkCompleted:
    """The work requested for a step attempt completed (from the work service's fact)."""

    now: datetime
    step_id: str
    iteration: int
    attempt: int
    output: str = ""
    cost: Money | None = None
    structured: dict[str, Any] | None = None
    request: str = ""
    """Key of the request this answers; when set it must be the step's outstanding one."""


@dataclass(frozen=True, kw_only=True)
class WorkFailed:
    now: datetime
    step_id: str
    iteration: int
    attempt: int
    code: str
    message: str = ""
    request: str = ""
    """Key of the request this answers; when set it must be the step's outstanding one."""
    cost: Money | None = None
    """Money the failed attempt spent all the same (an agent over its max_cost)."""


@dataclass(frozen=True, kw_only=True)
class ApprovalDecided:
    """A person decided: approved, rejected or needs_changes."""

    now: datetime
    step_id: str
    iteration: int
    decision: str
    decided_by: str = ""
    comment: str = ""
    request: str = ""
    """Key of the request this answers; when set it must be the step's outstanding one."""


@dataclass(frozen=True, kw_only=True)
class TimerFired:
    now: datetime
    timer_id: str


@dataclass(frozen=True, kw_only=True)
class CommandRejected:
    """The dispatcher got a permanent refusal for a command (e.g. INVALID_ARGUMENT)."""

    now: datetime
    key: str
    code: str
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class CancelExecution:
    now: datetime
    by: str = ""
    reason: str = ""
    compensate: bool = False
    """Undo the completed steps first (their compensations), then end cancelled."""


@dataclass(frozen=True, kw_only=True)
class PauseExecution:
    now: datetime
    by: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ResumeExecution:
    now: datetime
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class RetryFailedSteps:
    """Redrive a failed execution from its failure, keeping completed steps."""

    now: datetime
    step_id: str | None = None
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class MessageReceived:
    """A message for a waiting wait_for_message step (SignalExecution or NATS)."""

    now: datetime
    step_id: str
    iteration: int
    attempt: int
    message_id: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ChildExecutionEnded:
    """A child execution started by a sub_process step ended (completed, failed or
    cancelled); ``request`` is the parent step attempt's request key."""

    now: datetime
    request: str
    child_execution_id: str
    status: str
    output: str | None = None
    structured: dict[str, Any] | None = None
    cost: Money | None = None
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True, kw_only=True)
class MigrateExecution:
    """Move the execution onto ``target``, another version of its process (migration.py).

    ``mapping`` maps the ids of the current version's steps to the target's (see
    ``step_mapping``); a step that is not mapped is left behind with its state."""

    now: datetime
    target: CompiledProcess
    mapping: Mapping[str, str]
    by: str = ""


Event = (
    StartExecution
    | WorkCompleted
    | WorkFailed
    | ApprovalDecided
    | TimerFired
    | CommandRejected
    | CancelExecution
    | PauseExecution
    | ResumeExecution
    | RetryFailedSteps
    | MessageReceived
    | ChildExecutionEnded
    | MigrateExecution
)

REJECTED = "rejected"
APPROVAL_DECISIONS = frozenset({"approved", REJECTED, "needs_changes"})
