"""Compensation: undoing the completed steps of a failed or cancelled execution (pure).

When the execution fails, or is cancelled with ``compensate``, every completion of a step
that declares ``compensate`` (``ExecutionState.completions``: a loop's iterations apart)
is undone, one at a time, in reverse order of completion. Each compensation is work,
requested like a step's (``RequestWork``; its key and correlation name the step with
``COMPENSATION_MARK``, the iteration it undoes and its own attempt), answered by the
work service's facts, retried by its own policy after a durable backoff timer.

    begin(run, reason, skip_reason)   # False: nothing to compensate, end as usual
    answer(process, state, event)     # WorkCompleted/WorkFailed/TimerFired/CommandRejected

All succeeded: ``CompensationCompleted``, then the end the execution would have had
(``ProcessFailed`` / ``ProcessCancelled``). One failed for good: ``CompensationFailed``
naming the step, status COMPENSATION_FAILED (final), the later ones not run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from trinity_execution.domain.commands import (
    RequestWork,
    StartTimer,
    StepRef,
    TimerPurpose,
    parse_request_key,
    parse_timer_id,
    request_key,
    timer_id,
)
from trinity_execution.domain.compensation_state import (
    OUTPUT_LIMIT,
    CompensationReason,
    CompensationState,
    StepCompensation,
    StepCompensationStatus,
)
from trinity_execution.domain.context import build_context, completion_view
from trinity_execution.domain.errors import Failure, FieldExpressionError
from trinity_execution.domain.events import CommandRejected, TimerFired, WorkCompleted, WorkFailed
from trinity_execution.domain.facts import (
    CompensationCompleted,
    CompensationFailed,
    CompensationStarted,
    ProcessCancelled,
    StepCompensated,
)
from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.requests import work_payload
from trinity_execution.domain.retries import plan_retry
from trinity_execution.domain.state import ExecutionState, ExecutionStatus

if TYPE_CHECKING:
    from trinity_execution.domain.run import Run

COMPENSATION_MARK = "/compensate"
"""Appended to a step id in a compensation's keys and correlation (``review/compensate``):
step ids are identifiers, so no step's own request can look like one."""

Answer = WorkCompleted | WorkFailed | TimerFired | CommandRejected


def compensation_step(step_id: str) -> str:
    """The id a compensation of `step_id` is correlated by."""
    return f"{step_id}{COMPENSATION_MARK}"


def compensated_step(correlated: str) -> str | None:
    """The step a compensation's correlated id names, else None."""
    base, mark, rest = correlated.rpartition(COMPENSATION_MARK)
    return base if mark and not rest and base else None


def is_compensation(event: Answer, execution_id: str) -> bool:
    """Whether `event` answers a compensation (not a step attempt)."""
    if isinstance(event, WorkCompleted | WorkFailed):
        return compensated_step(event.step_id) is not None
    if isinstance(event, TimerFired):
        parsed = parse_timer_id(execution_id, event.timer_id)
        return parsed is not None and compensated_step(parsed[0]) is not None
    parsed_key = parse_request_key(execution_id, event.key)
    return parsed_key is not None and compensated_step(parsed_key[0]) is not None


def targets(process: CompiledProcess, state: ExecutionState) -> list[tuple[str, int]]:
    """The completions to undo, latest first (steps of this version declaring one)."""
    return [
        (sid, iteration)
        for sid, iteration in reversed(state.completions)
        if sid in process.steps and process.steps[sid].compensate is not None
    ]


def wanted(run: Run) -> bool:
    """Whether the execution, ending now, would compensate (see ``begin``)."""
    return run.state.compensation is None and bool(targets(run.process, run.state))


def begin(run: Run, reason: CompensationReason, skip_reason: str) -> bool:
    """Start compensating (the steps still running were stopped by the caller): every
    step that can no longer run ends skipped with `skip_reason`. False, changing
    nothing, when there is nothing to compensate or it was done already."""
    state = run.state
    todo = targets(run.process, state)
    if not todo or state.compensation is not None:
        return False
    state.move(ExecutionStatus.COMPENSATING)
    state.ended_at = None  # (a failed one cancelled with compensate) it ends afterwards
    state.unsettled.clear()
    run.skip_unreachable(skip_reason)
    state.compensation = CompensationState(
        reason, [StepCompensation(sid, iteration) for sid, iteration in todo], started_at=run.now
    )
    run.facts.append(
        CompensationStarted(
            execution=run.ref, reason=reason, targets=tuple(todo), occur_time=run.now
        )
    )
    _start_attempt(run)
    return True


def answer(process: CompiledProcess, state: ExecutionState, event: Answer, run: Run) -> str:
    """Apply an answer to a compensation to `run` (made from `state`); returns why it
    does not apply ('' when applied)."""
    comp = state.compensation
    if state.status is not ExecutionStatus.COMPENSATING or comp is None or comp.entry is None:
        return f"the execution is {state.status}, not compensating"
    entry = comp.entry
    ref = _ref(state.execution_id, entry)
    run.state.compensation = comp.clone()  # the given state stays untouched
    if isinstance(event, TimerFired):
        if not comp.timer or event.timer_id != comp.timer:
            return f"timer {event.timer_id!r} is not outstanding"
        _edit(run).timer = ""
        _start_attempt(run)
        return ""
    if isinstance(event, CommandRejected):
        if not comp.request or event.key != comp.request:
            return f"request {event.key!r} is not outstanding"
        _fail_for_good(run, Failure(event.code, event.message or "request refused"))
        return ""
    if (
        not comp.request
        or event.step_id != ref.step_id
        or event.iteration != ref.iteration
        or event.attempt != ref.attempt
        or (event.request and event.request != comp.request)
    ):
        return f"compensation of {event.step_id!r} does not wait for attempt {event.attempt}"
    if isinstance(event, WorkCompleted):
        _succeeded(run, event)
    else:
        _attempt_failed(run, event)
    return ""


# ------------------------------------------------------------------- internals


def _ref(execution_id: str, entry: StepCompensation) -> StepRef:
    return StepRef(execution_id, compensation_step(entry.step_id), entry.iteration, entry.attempt)


def _edit(run: Run) -> CompensationState:
    """The run's own compensation (``answer`` copied it; ``begin`` made a new one)."""
    comp = run.state.compensation
    assert comp is not None
    return comp


def _start_attempt(run: Run) -> None:
    """Request the next attempt of the current compensation, or end when none is left."""
    comp = _edit(run)
    entry = comp.entry
    if entry is None:
        _completed(run)
        return
    step = run.process.step(entry.step_id)
    compensation = step.compensate
    assert compensation is not None
    entry.attempt += 1
    entry.status = StepCompensationStatus.RUNNING
    entry.next_attempt_time = None
    context = build_context(run.process, run.state)
    context["step"] = completion_view(run.process, run.state, entry.step_id, entry.iteration)
    try:
        payload = work_payload(
            run.process, replace(step, config=compensation.config), context, run.state
        )
    except FieldExpressionError as exc:
        failure = replace(exc.failure(entry.step_id), message=f"compensate.{exc}")
        _fail_for_good(run, failure)
        return
    ref = _ref(run.state.execution_id, entry)
    comp.request = request_key(ref.execution_id, ref.step_id, ref.iteration, ref.attempt)
    run.commands.append(
        RequestWork(
            key=comp.request, payload=payload, correlation=ref, timeout=compensation.timeout
        )
    )


def _succeeded(run: Run, event: WorkCompleted) -> None:
    comp = _edit(run)
    entry = comp.entry
    assert entry is not None
    if event.cost is not None and not run.currency_problem(event.cost):
        run.count_cost(event.cost)  # money spent is counted; the budget stops nothing here
    entry.status = StepCompensationStatus.COMPENSATED
    entry.error = None
    entry.output = event.output[:OUTPUT_LIMIT]
    comp.request = ""
    comp.current += 1
    run.facts.append(
        StepCompensated(
            execution=run.ref,
            step_id=entry.step_id,
            iteration=entry.iteration,
            attempt=entry.attempt,
            output=event.output,
            occur_time=run.now,
        )
    )
    _start_attempt(run)


def _attempt_failed(run: Run, event: WorkFailed) -> None:
    comp = _edit(run)
    entry = comp.entry
    assert entry is not None
    if event.cost is not None and not run.currency_problem(event.cost):
        run.count_cost(event.cost)
    failure = Failure(event.code, event.message)
    compensation = run.process.step(entry.step_id).compensate
    assert compensation is not None
    policy = run.process.spec.compensation_retry_policy(compensation)
    plan = plan_retry(policy, entry.attempt, event.code, run.now)
    comp.request = ""
    if not plan.will_retry:
        _fail_for_good(run, failure)
        return
    assert plan.next_attempt_time is not None
    entry.status = StepCompensationStatus.WAITING
    entry.error = failure
    entry.next_attempt_time = plan.next_attempt_time
    ref = _ref(run.state.execution_id, entry)
    comp.timer = timer_id(
        ref.execution_id, ref.step_id, ref.iteration, ref.attempt, TimerPurpose.RETRY_BACKOFF
    )
    run.commands.append(
        StartTimer(
            timer_id=comp.timer,
            fire_at=plan.next_attempt_time,
            purpose=TimerPurpose.RETRY_BACKOFF,
            correlation=ref,
        )
    )


def _fail_for_good(run: Run, failure: Failure) -> None:
    comp = _edit(run)
    entry = comp.entry
    assert entry is not None
    entry.status = StepCompensationStatus.FAILED
    entry.error = failure
    entry.next_attempt_time = None
    comp.request = ""
    comp.failed_step_id = entry.step_id
    comp.ended_at = run.now
    state = run.state
    state.move(ExecutionStatus.COMPENSATION_FAILED)
    state.ended_at = run.now
    run.facts.append(
        CompensationFailed(
            execution=run.ref,
            step_id=entry.step_id,
            iteration=entry.iteration,
            attempt=entry.attempt,
            error=failure,
            not_compensated=len(comp.steps) - comp.current,
            occur_time=run.now,
        )
    )
    run.tell_parent()


def _completed(run: Run) -> None:
    comp = _edit(run)
    comp.ended_at = run.now
    state = run.state
    run.facts.append(
        CompensationCompleted(execution=run.ref, compensated=len(comp.steps), occur_time=run.now)
    )
    state.ended_at = run.now
    if comp.reason is CompensationReason.FAILURE:
        state.move(ExecutionStatus.FAILED)
        run.report_failed()
        return
    state.move(ExecutionStatus.CANCELLED)
    run.facts.append(
        ProcessCancelled(
            execution=run.ref,
            cancelled_by=state.cancelled_by,
            reason=state.cancel_reason,
            occur_time=run.now,
        )
    )
    run.tell_parent()


__all__ = [
    "COMPENSATION_MARK",
    "answer",
    "begin",
    "compensated_step",
    "compensation_step",
    "is_compensation",
    "targets",
]
