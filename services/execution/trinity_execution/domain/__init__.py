"""The execution engine: pure orchestration decisions (no I/O, no clock, no randomness).

    process = CompiledProcess.compile(definition_id, version, spec)   # once per version
    decision = decide(process, state_or_none, event)                  # per event
    decision.state, decision.commands, decision.facts, decision.ignored

Semantics in brief (each module says more):

* Readiness (readiness.py): a step runs when all its dependencies are finished
  (completed, skipped, or failed with on_failure: continue) and, if gateways route
  to it, one of them chose it (else ``route_not_taken``); if it has depends_on, at
  least one of them completed (else ``upstream_skipped``); then its condition must
  hold (else ``condition_not_met``). Skips propagate; joins below exclusive
  branches still run.
* Gateways (gateways.py): exclusive / parallel / inclusive with defaults;
  NO_MATCHING_ROUTE fails the gateway step. Routes are decided the moment the
  gateway becomes ready (StepStarted, GatewayEvaluated, StepCompleted at once).
* Loops: a route back to an ancestor resets the target and everything downstream of
  it to a new iteration (outstanding work there is cancelled; a bounded history of
  earlier iterations is kept per step). ``max_iterations`` bounds the iterations of
  the body (first pass = 1); past it the gateway takes its default route or fails
  with LOOP_LIMIT_REACHED. Counters of loops nested in the body restart with it.
* Approvals: every decision completes the step; ``steps.<id>.decision`` is
  approved / rejected / needs_changes (also ``.comment``, ``.decided_by``; output is
  the structured decision). A rejection does not fail the execution: route on it.
  The approval service owns the deadline (timeout and on_timeout travel with the
  request); its timed-out outcome comes back as ApprovalDecided.
* Retries (retries.py): the step's policy, or the process default; StepFailed says
  will_retry and when; a retry_backoff timer starts the next attempt. Step timeouts
  (agent, tool, notification) are a step_timeout timer: TIMEOUT fails the attempt and
  cancels its work. Engine codes (EXPRESSION_ERROR, NO_MATCHING_ROUTE,
  LOOP_LIMIT_REACHED, INVALID_TIMER, CURRENCY_MISMATCH) and refused commands never
  retry. The last failure fails the execution unless on_failure: continue.
* Budget (budget.py): exact totals; BudgetWarning once at 80 %; at 100 %
  BudgetExceeded once, then the execution fails (BUDGET_EXCEEDED, outstanding work
  cancelled) or pauses (paused_by "budget"). A person resuming or redriving accepts
  the overspend: the budget does not stop it again. Agent tasks get max_cost capped
  to what is left of the budget.
* Pause holds new steps in ``ready`` (running ones finish; the execution may even
  complete if nothing is left); resume starts them in order. Cancel cancels every
  outstanding request and timer. RetryFailedSteps redrives a failed execution: its
  failed steps and those cancelled by the failure get a new attempt series.
* Idempotency: commands carry keys ``<execution>/<step>/<iteration>/<attempt>``;
  an event that does not match the outstanding attempt is ignored, so duplicates
  and late answers change nothing.
* Compensation (compensation.py): when the execution fails, or is cancelled with
  ``compensate``, the compensations of completed steps run one at a time, latest
  completion first (status COMPENSATING); then it ends FAILED / CANCELLED, or
  COMPENSATION_FAILED naming the step whose compensation failed for good.
* Cost: each decision touches the steps it changes and their direct dependents
  (indexed graph, sparse state); the state is copied on write, never mutated.
"""

from __future__ import annotations

from trinity_execution.domain.commands import (
    AgentTaskWork,
    ApprovalArtifact,
    CancelApproval,
    CancelChildExecution,
    CancelTimer,
    CancelWork,
    CloseMessageSubscription,
    Command,
    NotificationWork,
    NotifyParent,
    OpenMessageSubscription,
    RequestApproval,
    RequestWork,
    StartChildExecution,
    StartTimer,
    StepRef,
    TimerPurpose,
    ToolRunWork,
    WorkKind,
    WorkPayload,
    child_execution_id,
    parse_request_key,
    parse_timer_id,
    request_key,
    timer_id,
)
from trinity_execution.domain.compensation import COMPENSATION_MARK, compensated_step
from trinity_execution.domain.compensation_state import (
    CompensationReason,
    CompensationState,
    StepCompensation,
    StepCompensationStatus,
)
from trinity_execution.domain.engine import Decision, ExecutionNotStarted, decide
from trinity_execution.domain.errors import (
    ExecutionDomainError,
    Failure,
    InvalidTransition,
    UnknownStep,
)
from trinity_execution.domain.events import (
    ApprovalDecided,
    CancelExecution,
    ChildExecutionEnded,
    CommandRejected,
    Event,
    MessageReceived,
    MigrateExecution,
    PauseExecution,
    ResumeExecution,
    RetryFailedSteps,
    StartExecution,
    TimerFired,
    WorkCompleted,
    WorkFailed,
)
from trinity_execution.domain.facts import (
    BudgetExceeded,
    BudgetWarning,
    CompensationCompleted,
    CompensationFailed,
    CompensationStarted,
    ExecutionMigrated,
    ExecutionRef,
    Fact,
    GatewayEvaluated,
    ProcessCancelled,
    ProcessCompleted,
    ProcessFailed,
    ProcessPaused,
    ProcessResumed,
    ProcessStarted,
    RouteEvaluation,
    StepCompensated,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
)
from trinity_execution.domain.migration import (
    MigrationProblem,
    mapping_violations,
    migration_problems,
    step_mapping,
)
from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.state import (
    ExecutionState,
    ExecutionStatus,
    ParentLink,
    StepState,
    StepStates,
    StepStatus,
    TriggerKind,
)

__all__ = [
    "COMPENSATION_MARK",
    "AgentTaskWork",
    "ApprovalArtifact",
    "ApprovalDecided",
    "BudgetExceeded",
    "BudgetWarning",
    "CancelApproval",
    "CancelChildExecution",
    "CancelExecution",
    "CancelTimer",
    "CancelWork",
    "ChildExecutionEnded",
    "CloseMessageSubscription",
    "Command",
    "CommandRejected",
    "CompensationCompleted",
    "CompensationFailed",
    "CompensationReason",
    "CompensationStarted",
    "CompensationState",
    "CompiledProcess",
    "Decision",
    "Event",
    "ExecutionDomainError",
    "ExecutionMigrated",
    "ExecutionNotStarted",
    "ExecutionRef",
    "ExecutionState",
    "ExecutionStatus",
    "Fact",
    "Failure",
    "GatewayEvaluated",
    "InvalidTransition",
    "MessageReceived",
    "MigrateExecution",
    "MigrationProblem",
    "NotificationWork",
    "NotifyParent",
    "OpenMessageSubscription",
    "ParentLink",
    "PauseExecution",
    "ProcessCancelled",
    "ProcessCompleted",
    "ProcessFailed",
    "ProcessPaused",
    "ProcessResumed",
    "ProcessStarted",
    "RequestApproval",
    "RequestWork",
    "ResumeExecution",
    "RetryFailedSteps",
    "RouteEvaluation",
    "StartChildExecution",
    "StartExecution",
    "StartTimer",
    "StepCompensated",
    "StepCompensation",
    "StepCompensationStatus",
    "StepCompleted",
    "StepFailed",
    "StepRef",
    "StepSkipped",
    "StepStarted",
    "StepState",
    "StepStates",
    "StepStatus",
    "TimerFired",
    "TimerPurpose",
    "ToolRunWork",
    "TriggerKind",
    "UnknownStep",
    "WorkCompleted",
    "WorkFailed",
    "WorkKind",
    "WorkPayload",
    "child_execution_id",
    "compensated_step",
    "decide",
    "mapping_violations",
    "migration_problems",
    "parse_request_key",
    "parse_timer_id",
    "request_key",
    "step_mapping",
    "timer_id",
]
