"""The decision function: (definition, state, event) → (new state, commands, facts).

Pure: no I/O, no clock (every event carries ``now``), no randomness. The state given
is never modified. An event that does not apply (a duplicate, a late answer for an
attempt that was already settled, anything for an ended execution) changes nothing
and says why in ``Decision.ignored``, so redelivery is always harmless.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from trinity_execution.domain import compensation, errors, fanout
from trinity_execution.domain.commands import Command, parse_request_key, parse_timer_id
from trinity_execution.domain.compensation_state import CompensationReason
from trinity_execution.domain.context import parse_output
from trinity_execution.domain.errors import ExecutionDomainError, Failure
from trinity_execution.domain.events import (
    APPROVAL_DECISIONS,
    REJECTED,
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
    SKIP_EXECUTION_CANCELLED,
    Fact,
    ProcessCancelled,
    ProcessResumed,
    ProcessStarted,
)
from trinity_execution.domain.migration import migration_problems, on_migrate
from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.run import BUDGET_PAUSER, Run
from trinity_execution.domain.state import ExecutionState, ExecutionStatus, StepStatus
from trinity_process_model.model import (
    HumanApprovalConfig,
    MessageTimeoutAction,
    RejectAction,
    StepKind,
    WaitForMessageConfig,
)

_WORK_KINDS = frozenset({StepKind.AGENT_TASK, StepKind.TOOL_RUN, StepKind.NOTIFICATION})


class ExecutionNotStarted(ExecutionDomainError):
    """An event other than StartExecution arrived for an execution with no state."""


@dataclass(frozen=True)
class Decision:
    state: ExecutionState
    commands: list[Command] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    ignored: str = ""
    """Why the event changed nothing ('' when it was applied)."""
    changed_steps: tuple[str, ...] = ()
    """Steps whose state this decision changed (a store can rewrite just those)."""
    dropped_steps: tuple[str, ...] = ()
    """Steps of the state given that the new state no longer has (a migration leaves
    behind the steps the new version has no counterpart for)."""


def decide(process: CompiledProcess, state: ExecutionState | None, event: Event) -> Decision:
    """Apply one event to an execution."""
    if state is None:
        if not isinstance(event, StartExecution):
            raise ExecutionNotStarted(f"{type(event).__name__} before StartExecution")
        return _start(process, event)
    handler = _HANDLERS[type(event)]
    return handler(process, state, event)


def _ignore(state: ExecutionState, why: str) -> Decision:
    return Decision(state, ignored=why)


def _done(run: Run) -> Decision:
    run.settle()
    return _decision(run)


def _decision(run: Run) -> Decision:
    return Decision(run.state, run.commands, run.facts, changed_steps=run.changed_steps)


# ------------------------------------------------------------------- lifecycle


def _start(process: CompiledProcess, event: StartExecution) -> Decision:
    blank = ExecutionState(event.execution_id, process.definition_id, process.version)
    run = Run(process, blank, event.now)
    state = run.state
    state.input = dict(event.input)
    state.triggered_by = event.triggered_by
    state.trigger_kind = event.trigger_kind
    state.parent = event.parent
    state.started_at = event.now
    state.move(ExecutionStatus.RUNNING)
    run.facts.append(
        ProcessStarted(
            execution=run.ref,
            triggered_by=event.triggered_by,
            trigger_kind=event.trigger_kind,
            input=dict(event.input),
            occur_time=event.now,
            parent_execution_id=event.parent.execution_id if event.parent else "",
            parent_step_id=event.parent.step_id if event.parent else "",
        )
    )
    run.consider(process.graph.entry_steps)
    return _done(run)


def _on_start_again(
    process: CompiledProcess, state: ExecutionState, event: StartExecution
) -> Decision:
    return _ignore(state, "the execution has already started")


_UNCANCELLABLE = frozenset(
    {
        ExecutionStatus.COMPLETED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.COMPENSATING,
        ExecutionStatus.COMPENSATION_FAILED,
    }
)


def _on_cancel(process: CompiledProcess, state: ExecutionState, event: CancelExecution) -> Decision:
    """Cancel: stop what runs; with ``compensate``, undo the completed steps first
    (compensation.py) and end cancelled once that is done."""
    if state.status in _UNCANCELLABLE:
        return _ignore(state, f"the execution is {state.status}")
    run = Run(process, state, event.now)
    reason = event.reason or "cancelled"
    run.undo_children = event.compensate  # running children undo what they did too
    run.abandon_all(errors.CANCELLED, reason)
    run.state.cancelled_by = event.by
    run.state.cancel_reason = event.reason
    if event.compensate and compensation.begin(
        run, CompensationReason.CANCELLATION, SKIP_EXECUTION_CANCELLED
    ):
        return _decision(run)
    run.state.move(ExecutionStatus.CANCELLED)
    run.state.unsettled.clear()
    run.state.ended_at = event.now
    run.skip_unreachable(SKIP_EXECUTION_CANCELLED)
    run.facts.append(
        ProcessCancelled(
            execution=run.ref, cancelled_by=event.by, reason=event.reason, occur_time=event.now
        )
    )
    run.tell_parent()
    return _decision(run)


def _on_pause(process: CompiledProcess, state: ExecutionState, event: PauseExecution) -> Decision:
    if state.status is not ExecutionStatus.RUNNING:
        return _ignore(state, f"the execution is {state.status}")
    run = Run(process, state, event.now)
    run.pause(event.by, event.reason)
    return _decision(run)


def _on_resume(process: CompiledProcess, state: ExecutionState, event: ResumeExecution) -> Decision:
    if state.status is not ExecutionStatus.PAUSED:
        return _ignore(state, f"the execution is {state.status}")
    run = Run(process, state, event.now)
    run.state.move(ExecutionStatus.RUNNING)
    run.state.paused_by = ""
    run.state.pause_reason = ""
    run.facts.append(ProcessResumed(execution=run.ref, resumed_by=event.by, occur_time=event.now))
    run.start_ready()
    for step_id in list(run.state.active):  # for_each items held while paused
        st = run.state.step(step_id)
        # (not one waiting for a retry backoff: its next attempt starts the items anew)
        if st.for_each is not None and st.request and run.is_running:
            fanout.fill(run, step_id)
    return _done(run)


def _on_retry(process: CompiledProcess, state: ExecutionState, event: RetryFailedSteps) -> Decision:
    """Redrive a failed execution: its failed steps (and those cancelled by the failure)
    get a new attempt series; completed steps are kept."""
    if state.status is not ExecutionStatus.FAILED:
        return _ignore(state, f"the execution is {state.status}")
    if state.compensation is not None:
        return _ignore(state, "the execution was compensated: what it did is undone")
    if event.step_id is not None and (
        state.step(event.step_id).status is not StepStatus.FAILED
        or state.step(event.step_id).continued
    ):
        return _ignore(state, f"step {event.step_id!r} has not failed")
    run = Run(process, state, event.now)
    st = run.state
    targets = sorted(
        (
            sid
            for sid, step in state.steps.items()
            if step.status is StepStatus.FAILED
            and not step.continued
            and (
                event.step_id is None
                or sid == event.step_id
                or (step.error is not None and step.error.code == errors.CANCELLED)
            )
        ),
        key=process.graph.position,
    )
    st.move(ExecutionStatus.RUNNING)
    st.error = None
    st.failed_step_id = ""
    st.ended_at = None
    run.facts.append(ProcessResumed(execution=run.ref, resumed_by=event.by, occur_time=event.now))
    for sid in targets:
        step = run.edit(sid)
        step.move(StepStatus.PENDING)
        step.attempt_base = step.attempt
        step.error = None
        step.ended_at = None
    run.consider(targets)
    run.consider(run.revive_skipped())
    run.consider(st.unsettled)
    st.unsettled = []
    run.start_ready()
    return _done(run)


# ------------------------------------------------------------------ outcomes


def _attempt_problem(
    process: CompiledProcess, state: ExecutionState, step_id: str, iteration: int, request: str = ""
) -> str:
    if step_id not in process.steps:
        return f"unknown step {step_id!r}"
    st = state.step(step_id)
    if st.iteration != iteration:
        return f"step {step_id!r} is in iteration {st.iteration}, not {iteration}"
    if not st.request:
        return f"step {step_id!r} waits for no answer"
    if request and request != st.request:
        return f"step {step_id!r} waits for an answer to {st.request!r}, not {request!r}"
    return ""


def _item_answered(
    process: CompiledProcess, state: ExecutionState, event: WorkCompleted | WorkFailed
) -> tuple[int | None, str]:
    """(item index, '') when the event answers an outstanding for_each item's work;
    (None, '') when it is no item's answer and the step waits for no items; else why
    it is ignored (an item's answer must name that item attempt's request)."""
    if event.step_id not in process.steps:
        return None, ""
    st = state.step(event.step_id)
    is_item = fanout.split_item_key(event.request) is not None
    if st.for_each is None:
        return None, f"request {event.request!r} is not outstanding" if is_item else ""
    index = fanout.outstanding(st, event.request)
    if (
        index is None
        or process.step(event.step_id).kind not in _WORK_KINDS
        or (st.iteration, st.attempt) != (event.iteration, event.attempt)
    ):
        return None, f"request {event.request!r} is not an outstanding item of the step"
    return index, ""


def _on_compensation(
    process: CompiledProcess,
    state: ExecutionState,
    event: WorkCompleted | WorkFailed | TimerFired | CommandRejected,
) -> Decision:
    run = Run(process, state, event.now)
    problem = compensation.answer(process, state, event, run)
    return _ignore(state, problem) if problem else _decision(run)


def _on_work_completed(
    process: CompiledProcess, state: ExecutionState, event: WorkCompleted
) -> Decision:
    if compensation.is_compensation(event, state.execution_id):
        return _on_compensation(process, state, event)
    index, problem = _item_answered(process, state, event)
    if index is not None:
        run = Run(process, state, event.now)
        output = event.structured if event.structured is not None else parse_output(event.output)
        fanout.item_ended(
            run, event.step_id, index, fanout.ItemOutcome(output=output, cost=event.cost)
        )
        return _done(run)
    problem = problem or _attempt_problem(
        process, state, event.step_id, event.iteration, event.request
    )
    st = state.step(event.step_id)
    if not problem and (
        process.step(event.step_id).kind not in _WORK_KINDS or st.attempt != event.attempt
    ):
        problem = f"step {event.step_id!r} does not wait for attempt {event.attempt}"
    if problem:
        return _ignore(state, problem)
    run = Run(process, state, event.now)
    if event.cost is not None:
        currency = run.currency_problem(event.cost)
        if currency:
            run.fail_attempt(
                event.step_id, Failure(errors.CURRENCY_MISMATCH, currency), retryable=False
            )
            return _done(run)
    run.complete(
        event.step_id,
        output=event.output,
        structured=dict(event.structured) if event.structured is not None else None,
        cost=event.cost,
    )
    return _done(run)


def _on_work_failed(process: CompiledProcess, state: ExecutionState, event: WorkFailed) -> Decision:
    if compensation.is_compensation(event, state.execution_id):
        return _on_compensation(process, state, event)
    index, problem = _item_answered(process, state, event)
    if index is not None:
        run = Run(process, state, event.now)
        failure = Failure(event.code, event.message)
        outcome = fanout.ItemOutcome(failure=failure, cost=event.cost)
        fanout.item_ended(run, event.step_id, index, outcome)
        return _done(run)
    problem = problem or _attempt_problem(
        process, state, event.step_id, event.iteration, event.request
    )
    if not problem and state.step(event.step_id).attempt != event.attempt:
        problem = f"step {event.step_id!r} does not wait for attempt {event.attempt}"
    if problem:
        return _ignore(state, problem)
    run = Run(process, state, event.now)
    if event.cost is not None and not run.currency_problem(event.cost):
        # Money spent is always counted, even by an attempt that failed for it.
        run.edit(event.step_id).cost = event.cost
        exceeded = run.count_cost(event.cost)
        run.fail_attempt(event.step_id, Failure(event.code, event.message))
        run.apply_budget_action(exceeded)
        return _done(run)
    run.fail_attempt(event.step_id, Failure(event.code, event.message))
    return _done(run)


def _on_approval(
    process: CompiledProcess, state: ExecutionState, event: ApprovalDecided
) -> Decision:
    """The decision becomes the step's outcome. A rejection (a timed-out one included)
    fails the step with APPROVAL_REJECTED and stops the path, unless the step says
    ``on_reject: continue``: then it completes, and gateways route on
    ``steps.<id>.decision``. Approval and changes requested complete the step."""
    problem = _attempt_problem(process, state, event.step_id, event.iteration, event.request)
    if not problem and process.step(event.step_id).kind is not StepKind.HUMAN_APPROVAL:
        problem = f"step {event.step_id!r} is not an approval"
    if not problem and event.decision not in APPROVAL_DECISIONS:
        problem = f"unknown decision {event.decision!r}"
    if problem:
        return _ignore(state, problem)
    run = Run(process, state, event.now)
    config = process.step(event.step_id).config
    assert isinstance(config, HumanApprovalConfig)
    if event.decision == REJECTED and config.on_reject is RejectAction.FAIL:
        step = run.edit(event.step_id)
        step.decision, step.decided_by, step.comment = REJECTED, event.decided_by, event.comment
        by = f" by {event.decided_by}" if event.decided_by else ""
        why = f": {event.comment}" if event.comment else ""
        run.fail_attempt(
            event.step_id,
            Failure(errors.APPROVAL_REJECTED, f"rejected{by}{why}"),
            retryable=False,
        )
        return _done(run)
    run.complete(
        event.step_id,
        output=event.comment or event.decision,
        structured={
            "decision": event.decision,
            "decided_by": event.decided_by,
            "comment": event.comment,
        },
        decision=event.decision,
        decided_by=event.decided_by,
        comment=event.comment,
    )
    return _done(run)


def _on_timer(process: CompiledProcess, state: ExecutionState, event: TimerFired) -> Decision:
    if compensation.is_compensation(event, state.execution_id):
        return _on_compensation(process, state, event)
    retried = fanout.split_retry_timer(event.timer_id) or fanout.split_load_timer(event.timer_id)
    if retried is not None:
        owner = parse_request_key(state.execution_id, retried[0])
        if owner is not None and owner[0] in process.steps:
            run = Run(process, state, event.now)
            if fanout.retry_due(run, owner[0], event.timer_id) or fanout.load_due(
                run, owner[0], event.timer_id
            ):
                return _done(run)
        return _ignore(state, f"timer {event.timer_id!r} is not outstanding")
    parsed = parse_timer_id(state.execution_id, event.timer_id)
    if parsed is None or parsed[0] not in process.steps:
        return _ignore(state, f"unknown timer {event.timer_id!r}")
    step_id, _, _, purpose = parsed
    st = state.step(step_id)
    run = Run(process, state, event.now)
    if event.timer_id == st.timer and purpose == "step_timer":
        run.complete(step_id, output=event.now.isoformat())
    elif event.timer_id == st.timer and purpose == "retry_backoff":
        run.edit(step_id).timer = ""
        run.make_ready(step_id)
    elif event.timer_id == st.timeout_timer and st.request:
        step = run.edit(step_id)
        step.timeout_timer = ""
        timeout = process.step(step_id).timeout
        config = process.step(step_id).config
        if (
            isinstance(config, WaitForMessageConfig)
            and config.on_timeout is MessageTimeoutAction.CONTINUE
        ):
            run.complete(step_id, output="", structured={"timed_out": True})
            return _done(run)
        run.abandon_request(step_id, "step timed out")
        run.fail_attempt(step_id, Failure(errors.TIMEOUT, f"no outcome within {timeout}"))
    else:
        return _ignore(state, f"timer {event.timer_id!r} is not outstanding")
    return _done(run)


def _on_message(
    process: CompiledProcess, state: ExecutionState, event: MessageReceived
) -> Decision:
    """The message's payload (a JSON object) becomes the step's output."""
    problem = _attempt_problem(process, state, event.step_id, event.iteration)
    if not problem and (
        process.step(event.step_id).kind is not StepKind.WAIT_FOR_MESSAGE
        or state.step(event.step_id).attempt != event.attempt
    ):
        problem = f"step {event.step_id!r} does not wait for a message in attempt {event.attempt}"
    if problem:
        return _ignore(state, problem)
    run = Run(process, state, event.now)
    payload = dict(event.payload)
    run.complete(
        event.step_id,
        output=json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
        structured=payload,
    )
    return _done(run)


def _on_child_ended(
    process: CompiledProcess, state: ExecutionState, event: ChildExecutionEnded
) -> Decision:
    """The child of a sub_process step ended. Completed: its answer becomes the step's
    output and its total cost the step's cost (so it counts against this budget). Failed
    or cancelled: the attempt fails with CHILD_EXECUTION_FAILED (the retry policy applies:
    a retry starts a new child)."""
    item = fanout.split_item_key(event.request)
    request = event.request if item is None else item[0]
    parsed = parse_request_key(state.execution_id, request)
    if parsed is None or parsed[0] not in process.steps:
        return _ignore(state, f"no step request has key {event.request!r}")
    step_id = parsed[0]
    st = state.step(step_id)
    if process.step(step_id).kind is not StepKind.SUB_PROCESS or st.request != request:
        return _ignore(state, f"request {event.request!r} is not outstanding")
    index = fanout.outstanding(st, event.request)
    if (item is None) != (st.for_each is None) or (item is not None and index is None):
        return _ignore(state, f"request {event.request!r} is not outstanding")
    run = Run(process, state, event.now)
    if index is not None:
        fanout.item_ended(run, step_id, index, _child_outcome(event))
        return _done(run)
    if event.status != str(ExecutionStatus.COMPLETED):
        why = f"child execution {event.child_execution_id} {event.status}"
        detail = f": {event.error_code} {event.error_message}".rstrip() if event.error_code else ""
        run.fail_attempt(step_id, Failure(errors.CHILD_EXECUTION_FAILED, why + detail))
        return _done(run)
    if event.cost is not None:
        currency = run.currency_problem(event.cost)
        if currency:
            run.fail_attempt(step_id, Failure(errors.CURRENCY_MISMATCH, currency), retryable=False)
            return _done(run)
    run.complete(
        step_id,
        output=event.output or "",
        structured=dict(event.structured) if event.structured is not None else None,
        cost=event.cost,
    )
    return _done(run)


def _child_outcome(event: ChildExecutionEnded) -> fanout.ItemOutcome:
    """One for_each item's child ended: its answer, or why it failed (CHILD_EXECUTION_FAILED)."""
    if event.status != str(ExecutionStatus.COMPLETED):
        detail = f": {event.error_code} {event.error_message}".rstrip() if event.error_code else ""
        failure = Failure(errors.CHILD_EXECUTION_FAILED, f"child {event.status}{detail}")
        return fanout.ItemOutcome(failure=failure)
    structured = event.structured
    output = dict(structured) if structured is not None else parse_output(event.output)
    return fanout.ItemOutcome(output=output, cost=event.cost)


def _on_rejected(
    process: CompiledProcess, state: ExecutionState, event: CommandRejected
) -> Decision:
    """A permanent refusal of a request fails its attempt, without retries; a refused
    start of one for_each item fails that item (within the tolerated failures)."""
    if compensation.is_compensation(event, state.execution_id):
        return _on_compensation(process, state, event)
    item = fanout.split_item_key(event.key)
    request = event.key if item is None else item[0]
    parsed = parse_request_key(state.execution_id, request)
    if parsed is None or parsed[0] not in process.steps:
        return _ignore(state, f"no step request has key {event.key!r}")
    step_id = parsed[0]
    st = state.step(step_id)
    if st.request != request:
        return _ignore(state, f"request {event.key!r} is not outstanding")
    index = fanout.outstanding(st, event.key)
    if item is not None and index is None:
        return _ignore(state, f"request {event.key!r} is not outstanding")
    run = Run(process, state, event.now)
    if index is not None:
        failure = Failure(event.code, f"its start was refused: {event.message}")
        fanout.item_ended(run, step_id, index, fanout.ItemOutcome(failure=failure, retryable=False))
        return _done(run)
    run.fail_attempt(
        step_id, Failure(event.code, event.message or "request refused"), retryable=False
    )
    return _done(run)


def _on_migrate(
    process: CompiledProcess, state: ExecutionState, event: MigrateExecution
) -> Decision:
    """Move onto another version (migration.py); refused moves change nothing."""
    target = event.target
    if (state.definition_id, state.version) == (target.definition_id, target.version):
        return _ignore(state, f"the execution already runs version {target.version}")
    problems = migration_problems(process, event.target, state, event.mapping)
    if problems:
        return _ignore(state, "; ".join(p.message for p in problems))
    decision = _done(on_migrate(process, state, event))
    dropped = tuple(sid for sid in state.steps if sid not in decision.state.steps)
    return replace(decision, dropped_steps=dropped)


_HANDLERS: dict[type, Callable[[CompiledProcess, ExecutionState, Any], Decision]] = {
    StartExecution: _on_start_again,
    WorkCompleted: _on_work_completed,
    WorkFailed: _on_work_failed,
    ApprovalDecided: _on_approval,
    TimerFired: _on_timer,
    CommandRejected: _on_rejected,
    CancelExecution: _on_cancel,
    PauseExecution: _on_pause,
    ResumeExecution: _on_resume,
    RetryFailedSteps: _on_retry,
    MessageReceived: _on_message,
    ChildExecutionEnded: _on_child_ended,
    MigrateExecution: _on_migrate,
}

__all__ = ["BUDGET_PAUSER", "Decision", "ExecutionNotStarted", "decide"]
