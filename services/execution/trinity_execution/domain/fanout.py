"""for_each: a step's body (a sub-process, an agent task or a tool run) runs once per item
of a list computed when the step starts, at most ``max_concurrency`` at once, outputs
collected in item order.

Each item's request has its own key, ``<step request>/item/<index>`` (then
``/<attempt>`` from its second attempt): a child execution, or a work request, per item
attempt. An answer continues an item only when its key is that item's outstanding one,
so an answer for item i never moves item j, and a stale answer for an earlier attempt
moves nothing. A failed item is retried by the step's retry policy (per item, with its
backoff); failures beyond ``tolerated_failures`` fail the step and stop the items still
outstanding. Each item's cost counts against the budget as it ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trinity_execution.domain import errors
from trinity_execution.domain.commands import (
    CancelChildExecution,
    CancelTimer,
    CancelWork,
    Command,
    RequestWork,
    StartTimer,
    TimerPurpose,
)
from trinity_execution.domain.errors import Failure, FieldExpressionError
from trinity_execution.domain.items import ForEachState
from trinity_execution.domain.requests import work_payload
from trinity_execution.domain.retries import plan_retry
from trinity_execution.domain.state import StepState, StepStatus
from trinity_process_model.expressions import ExpressionError
from trinity_process_model.model import (
    DEFAULT_MAX_CONCURRENCY,
    MAX_FOR_EACH_ITEMS,
    AgentTaskConfig,
    Money,
    Step,
    SubProcessConfig,
    ToolRunConfig,
)

if TYPE_CHECKING:
    from trinity_execution.domain.run import Run

Body = AgentTaskConfig | ToolRunConfig | SubProcessConfig

ITEM_MARK = "/item/"
_RETRY = f"/{TimerPurpose.RETRY_BACKOFF}"
_LOAD = "/load/"


def item_key(request: str, index: int, attempt: int = 1) -> str:
    """The key of one item attempt's request (its child, or its work)."""
    key = f"{request}{ITEM_MARK}{index}"
    return key if attempt == 1 else f"{key}/{attempt}"


def split_item_key(key: str) -> tuple[str, int, int] | None:
    """(step request key, item index, item attempt) of an item's key, else None."""
    base, mark, tail = key.rpartition(ITEM_MARK)
    index, _, attempt = tail.partition("/")
    if not mark or not index.isdigit() or not (attempt.isdigit() or attempt == ""):
        return None
    return base, int(index), int(attempt or 1)


def split_retry_timer(timer: str) -> tuple[str, int, int] | None:
    """(step request key, index, failed attempt) of an item's retry timer, else None."""
    if not timer.endswith(_RETRY):
        return None
    return split_item_key(timer[: -len(_RETRY)])


@dataclass(frozen=True)
class ItemOutcome:
    """How one item attempt ended: its output, or why it failed; what it spent."""

    output: Any = None
    failure: Failure | None = None
    cost: Money | None = None
    retryable: bool = True


def body_of(step: Step) -> Body | None:
    config = step.config
    if isinstance(config, AgentTaskConfig | ToolRunConfig | SubProcessConfig) and config.for_each:
        return config
    return None


def start(run: Run, step: Step, st: StepState, config: Body) -> None:
    """Compute the items and start the first ones."""
    try:
        items = run.process.condition(config.for_each).value(run.context())
    except ExpressionError as exc:
        run.fail_to_start(step.id, st, Failure(errors.EXPRESSION_ERROR, str(exc)))
        return
    if not isinstance(items, list | tuple):
        what = type(items).__name__
        failure = Failure(errors.EXPRESSION_ERROR, f"for_each gives a {what}, not a list")
        run.fail_to_start(step.id, st, failure)
        return
    limit = min(config.max_items or MAX_FOR_EACH_ITEMS, MAX_FOR_EACH_ITEMS)
    if len(items) > limit:
        failure = Failure(
            errors.FOR_EACH_TOO_MANY_ITEMS, f"for_each gives {len(items)} items, at most {limit}"
        )
        run.fail_to_start(step.id, st, failure)
        return
    st.move(StepStatus.WAITING)
    run.state.active[step.id] = None
    st.request = run.key(step.id, st)
    st.child = ""
    window = config.max_concurrency or DEFAULT_MAX_CONCURRENCY
    st.for_each = ForEachState.started(st.request, list(items), window)
    run.start_step_timeout(step, st, run.step_ref(step.id, st))
    fill(run, step.id)


def fill(run: Run, step_id: str) -> None:
    """Send the retries held, start items until ``max_concurrency`` run; complete the
    step when all ended."""
    st = run.edit(step_id)
    state = st.for_each
    assert state is not None
    config = body_of(run.process.step(step_id))
    assert config is not None
    while state.held and run.is_running:
        if state.held[0] not in state.items:
            load(run, step_id, st)
            return
        if not _send(run, step_id, st, config, state.held.pop(0)):
            return
    concurrency = config.max_concurrency or DEFAULT_MAX_CONCURRENCY
    while run.is_running and len(state.running) < concurrency and state.next < state.total:
        index = state.next
        if index not in state.items:
            load(run, step_id, st)
            return
        state.next += 1
        state.running.append(index)
        if not _send(run, step_id, st, config, index):
            return
    if not state.running and state.next >= state.total and run.is_live:
        outputs = state.outputs()
        if outputs is None:
            load(run, step_id, st)
            return
        cost = state.cost
        run.complete(
            step_id,
            output=json.dumps(outputs, ensure_ascii=False, separators=(",", ":")),
            structured={"items": outputs, "failed": state.failed},
        )
        run.edit(step_id).cost = cost  # already counted item by item


def load(run: Run, step_id: str, st: StepState) -> None:
    """This decision lacks items or results it was not given (items.py): decide again,
    at once, with everything loaded."""
    state = st.for_each
    assert state is not None
    if state.wants_all:
        return  # asked already: its timer is on the way
    state.wants_all = True
    state.loads += 1
    run.commands.append(
        StartTimer(
            timer_id=f"{state.request}{_LOAD}{state.loads}",
            fire_at=run.now,
            purpose=TimerPurpose.FOR_EACH_LOAD,
            correlation=run.step_ref(step_id, st),
        )
    )


def split_load_timer(timer: str) -> tuple[str, int] | None:
    """(step request key, load number) of a for_each's load timer, else None."""
    request, mark, number = timer.rpartition(_LOAD)
    return (request, int(number)) if mark and number.isdigit() else None


def load_due(run: Run, step_id: str, timer: str) -> bool:
    """The full load asked for is here: go on. False when no load of the step waits."""
    st = run.state.step(step_id)
    state = st.for_each
    parsed = split_load_timer(timer)
    if (
        state is None
        or parsed is None
        or parsed[0] != st.request
        or not state.wants_all
        or parsed[1] != state.loads
    ):
        return False
    st = run.edit(step_id)
    assert st.for_each is not None
    st.for_each.wants_all = False
    fill(run, step_id)
    return True


def _send(run: Run, step_id: str, st: StepState, config: Body, index: int) -> bool:
    """Send the request of the item's current attempt (it is in ``running``). False when
    that failed the step attempt (its templates did not render, beyond the tolerated)."""
    state = st.for_each
    assert state is not None
    key = item_key(state.request, index, state.attempts.get(index, 1))
    context = {**run.context(), "item": state.items[index], "item_index": index}
    command: Command
    try:
        if isinstance(config, SubProcessConfig):
            values = {k: run.process.render(v, context) for k, v in config.input.items()}
            command = run.child_command(step_id, st, config, key, values)
        else:
            step = run.process.step(step_id)
            payload = work_payload(run.process, step, context, run.state)
            ref = run.step_ref(step_id, st)
            command = RequestWork(key=key, payload=payload, correlation=ref, timeout=step.timeout)
    except (ExpressionError, FieldExpressionError) as exc:
        failure = Failure(errors.EXPRESSION_ERROR, f"its templates: {exc}")
        return not _ended(run, step_id, st, index, ItemOutcome(failure=failure, retryable=False))
    run.commands.append(command)
    return True


def outstanding(st: StepState, key: str) -> int | None:
    """The item whose outstanding request has ``key``, else None (stale, foreign, ended)."""
    state = st.for_each
    parsed = split_item_key(key)
    if state is None or parsed is None or parsed[0] != st.request:
        return None
    _, index, attempt = parsed
    if index not in state.running or index in state.backoff:
        return None
    return index if state.attempts.get(index, 1) == attempt else None


def item_ended(run: Run, step_id: str, index: int, outcome: ItemOutcome) -> None:
    """An outstanding item attempt ended (``outstanding`` found it)."""
    st = run.edit(step_id)
    if not _ended(run, step_id, st, index, outcome) and run.is_live:
        fill(run, step_id)


def _ended(run: Run, step_id: str, st: StepState, index: int, outcome: ItemOutcome) -> bool:
    """Record the end of an item attempt; True when that failed the step attempt."""
    state = st.for_each
    assert state is not None
    exceeded = ""
    cost = outcome.cost
    if cost is not None:
        problem = run.currency_problem(cost)
        if problem:
            outcome = ItemOutcome(failure=Failure(errors.CURRENCY_MISMATCH, problem))
        else:
            state.cost = cost if state.cost is None else state.cost + cost
            exceeded = run.count_cost(cost)  # money spent always counts
    if outcome.failure is None:
        state.running.remove(index)
        state.attempts.pop(index, None)
        state.end(index, outcome.output, failed=False)
        stopped = False
    else:
        stopped = _failed(run, step_id, st, index, outcome)
    run.apply_budget_action(exceeded)
    return stopped or not run.is_live


def _failed(run: Run, step_id: str, st: StepState, index: int, outcome: ItemOutcome) -> bool:
    """A failed item attempt: retried after its backoff, or the item failed (True when
    that is one failure beyond the tolerated: the step attempt failed)."""
    state = st.for_each
    assert outcome.failure is not None and state is not None
    attempt = state.attempts.get(index, 1)
    policy = run.process.retry_policies[step_id]
    plan = plan_retry(policy, attempt, outcome.failure.code, run.now)
    if outcome.retryable and plan.will_retry and run.is_live:
        assert plan.next_attempt_time is not None
        state.attempts[index] = attempt + 1
        state.backoff.append(index)
        run.commands.append(
            StartTimer(
                timer_id=item_key(state.request, index, attempt) + _RETRY,
                fire_at=plan.next_attempt_time,
                purpose=TimerPurpose.RETRY_BACKOFF,
                correlation=run.step_ref(step_id, st),
            )
        )
        return False
    state.running.remove(index)
    state.attempts.pop(index, None)
    state.end(index, None, failed=True)
    config = body_of(run.process.step(step_id))
    assert config is not None
    if state.failed <= config.tolerated_failures:
        return False
    code = (
        errors.CHILD_EXECUTION_FAILED
        if isinstance(config, SubProcessConfig)
        else errors.FOR_EACH_ITEM_FAILED
    )
    why = f"{outcome.failure.code}: {outcome.failure.message}".rstrip(": ")
    message = f"item {index} failed ({why}); {state.failed} failed"
    # Each item had its retries: the step attempt is not retried as a whole.
    run.fail_attempt(step_id, Failure(code, message), retryable=False)
    return True


def retry_due(run: Run, step_id: str, timer: str) -> bool:
    """An item's retry backoff ended: send its next attempt. False when the timer is not
    one this step waits for."""
    st = run.state.step(step_id)
    state = st.for_each
    parsed = split_retry_timer(timer)
    if state is None or parsed is None or parsed[0] != st.request:
        return False
    _, index, failed_attempt = parsed
    if index not in state.backoff or state.attempts.get(index, 1) != failed_attempt + 1:
        return False
    st = run.edit(step_id)
    assert st.for_each is not None
    st.for_each.backoff.remove(index)
    st.for_each.held.append(index)  # sent now, or when the execution runs again
    if run.is_running:
        fill(run, step_id)
    return True


def cancel_running(run: Run, step_id: str, st: StepState, reason: str) -> None:
    """Cancel the items still outstanding (the attempt is over)."""
    state = st.for_each
    if state is None:
        return
    child = isinstance(run.process.step(step_id).config, SubProcessConfig)
    for index in state.running:
        attempt = state.attempts.get(index, 1)
        if index in state.backoff:
            run.commands.append(CancelTimer(item_key(state.request, index, attempt - 1) + _RETRY))
        elif index not in state.held:
            key = item_key(state.request, index, attempt)
            run.commands.append(
                CancelChildExecution(key, reason, compensate=run.undo_children)
                if child
                else CancelWork(key, reason)
            )
    state.running.clear()
    state.backoff.clear()
    state.held.clear()
    state.attempts.clear()
    if state.wants_all:
        run.commands.append(CancelTimer(f"{state.request}{_LOAD}{state.loads}"))
        state.wants_all = False
