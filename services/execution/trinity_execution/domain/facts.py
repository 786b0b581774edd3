"""What the engine reports, as data: one class per fact of
``proto/trinity/process/execution/v1/facts.proto``, field for field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trinity_execution.domain.compensation_state import CompensationReason
from trinity_execution.domain.errors import Failure
from trinity_execution.domain.state import TriggerKind
from trinity_process_model.model import BudgetAction, GatewayType, Money, StepKind


@dataclass(frozen=True)
class ExecutionRef:
    execution_id: str
    process_id: str
    process_name: str
    process_version: str


@dataclass(frozen=True, kw_only=True)
class ProcessStarted:
    execution: ExecutionRef
    triggered_by: str
    trigger_kind: TriggerKind
    input: dict[str, Any]
    occur_time: datetime
    parent_execution_id: str = ""
    parent_step_id: str = ""


@dataclass(frozen=True, kw_only=True)
class ProcessCompleted:
    execution: ExecutionRef
    total_cost: Money | None
    total_duration: timedelta
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class ProcessFailed:
    execution: ExecutionRef
    failed_step_id: str
    error: Failure
    total_cost: Money | None
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class ProcessCancelled:
    execution: ExecutionRef
    cancelled_by: str
    reason: str
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class ProcessPaused:
    execution: ExecutionRef
    paused_by: str
    reason: str
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class ProcessResumed:
    execution: ExecutionRef
    resumed_by: str
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class StepStarted:
    execution: ExecutionRef
    step_id: str
    step_name: str
    kind: StepKind
    iteration: int
    attempt: int
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class StepCompleted:
    execution: ExecutionRef
    step_id: str
    iteration: int
    attempt: int
    output: str
    structured_output: dict[str, Any] | None
    cost: Money | None
    duration: timedelta
    decision: str
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class StepFailed:
    execution: ExecutionRef
    step_id: str
    iteration: int
    attempt: int
    error: Failure
    will_retry: bool
    next_attempt_time: datetime | None
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class StepSkipped:
    execution: ExecutionRef
    step_id: str
    iteration: int
    reason: str
    """condition_not_met, route_not_taken or upstream_skipped."""
    occur_time: datetime


@dataclass(frozen=True)
class RouteEvaluation:
    target: str
    condition: str
    matched: bool
    value: str
    """What the condition saw (``path=value; ...``)."""
    is_default: bool


@dataclass(frozen=True, kw_only=True)
class GatewayEvaluated:
    execution: ExecutionRef
    step_id: str
    iteration: int
    gateway_type: GatewayType
    selected_targets: tuple[str, ...]
    routes: tuple[RouteEvaluation, ...] = field(default=())
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class BudgetWarning:
    execution: ExecutionRef
    total_cost: Money
    budget: Money
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class BudgetExceeded:
    execution: ExecutionRef
    total_cost: Money
    budget: Money
    action: BudgetAction
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class ExecutionMigrated:
    """The execution moved to another version (``execution`` names the new one)."""

    execution: ExecutionRef
    from_process_id: str
    from_version: str
    step_mapping: dict[str, str]
    """Old step id → new step id, for every step that had run or was running."""
    migrated_by: str
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class CompensationStarted:
    """The execution failed or was cancelled with compensation: ``targets`` (step id,
    iteration) are undone in this order."""

    execution: ExecutionRef
    reason: CompensationReason
    targets: tuple[tuple[str, int], ...]
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class StepCompensated:
    execution: ExecutionRef
    step_id: str
    iteration: int
    attempt: int
    output: str
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class CompensationFailed:
    """A compensation failed for good: the execution ends COMPENSATION_FAILED."""

    execution: ExecutionRef
    step_id: str
    iteration: int
    attempt: int
    error: Failure
    not_compensated: int
    occur_time: datetime


@dataclass(frozen=True, kw_only=True)
class CompensationCompleted:
    execution: ExecutionRef
    compensated: int
    occur_time: datetime


Fact = (
    ProcessStarted
    | ProcessCompleted
    | ProcessFailed
    | ProcessCancelled
    | ProcessPaused
    | ProcessResumed
    | StepStarted
    | StepCompleted
    | StepFailed
    | StepSkipped
    | GatewayEvaluated
    | BudgetWarning
    | BudgetExceeded
    | ExecutionMigrated
    | CompensationStarted
    | StepCompensated
    | CompensationFailed
    | CompensationCompleted
)

SKIP_CONDITION_NOT_MET = "condition_not_met"
SKIP_ROUTE_NOT_TAKEN = "route_not_taken"
SKIP_UPSTREAM_SKIPPED = "upstream_skipped"
SKIP_UPSTREAM_FAILED = "upstream_failed"
"""A step below a step that failed for good: it can no longer run."""
SKIP_EXECUTION_FAILED = "execution_failed"
"""A step the failed execution will never reach (not below the failed step)."""
SKIP_EXECUTION_CANCELLED = "execution_cancelled"
TERMINAL_SKIPS = frozenset({SKIP_UPSTREAM_FAILED, SKIP_EXECUTION_FAILED, SKIP_EXECUTION_CANCELLED})
"""Skips made because the execution ended; a redrive makes those steps pending again."""
