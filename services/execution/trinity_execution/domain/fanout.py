"""for_each on a sub_process step: one child execution per item of a list computed when
the step starts, at most ``max_concurrency`` at once, outputs collected in item order.

The step keeps the items, the indexes running, the outputs of the ended ones and the
failed indexes (``ForEachState``); each event touches one item, so a decision costs
the same with 10 items or 1,000 apart from writing the step back. Each item's child
has its own request key (``<step request>/item/<index>``), so its end answers that
item only, once. Failures beyond ``tolerated_failures`` fail the attempt and cancel
the children still running; each item's cost counts against the budget as it ends.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from trinity_execution.domain import errors
from trinity_execution.domain.commands import CancelChildExecution
from trinity_execution.domain.context import parse_output
from trinity_execution.domain.errors import Failure
from trinity_execution.domain.state import ForEachState, StepState, StepStatus
from trinity_process_model.expressions import ExpressionError
from trinity_process_model.model import (
    DEFAULT_MAX_CONCURRENCY,
    MAX_FOR_EACH_ITEMS,
    Step,
    SubProcessConfig,
)

if TYPE_CHECKING:
    from trinity_execution.domain.events import ChildExecutionEnded
    from trinity_execution.domain.run import Run

ITEM_MARK = "/item/"


def item_key(request: str, index: int) -> str:
    return f"{request}{ITEM_MARK}{index}"


def split_item_key(key: str) -> tuple[str, int] | None:
    """(step request key, item index) of an item's key, else None."""
    base, mark, index = key.rpartition(ITEM_MARK)
    if not mark or not index.isdigit():
        return None
    return base, int(index)


def start(run: Run, step: Step, st: StepState, config: SubProcessConfig) -> None:
    """Compute the items and start the first children."""
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
    st.for_each = ForEachState(items=list(items))
    run.start_step_timeout(step, st, run.step_ref(step.id, st))
    fill(run, step.id)


def fill(run: Run, step_id: str) -> None:
    """Start children until ``max_concurrency`` run; complete the step when all ended."""
    st = run.edit(step_id)
    state = st.for_each
    assert state is not None
    config = run.process.step(step_id).config
    assert isinstance(config, SubProcessConfig)
    concurrency = config.max_concurrency or DEFAULT_MAX_CONCURRENCY
    while run.is_running and len(state.running) < concurrency and state.next < len(state.items):
        index = state.next
        state.next += 1
        item = state.items[index]
        context = {**run.context(), "item": item, "item_index": index}
        try:
            values = {k: run.process.render(v, context) for k, v in config.input.items()}
        except ExpressionError as exc:
            if _item_failed(run, step_id, st, index, f"its input: {exc}"):
                return
            continue
        key = item_key(st.request, index)
        state.running.append(index)
        run.commands.append(run.child_command(step_id, st, config, key, values))
    if not state.running and state.next >= len(state.items) and run.is_live:
        outputs = [state.outputs.get(i) for i in range(len(state.items))]
        cost = state.cost
        run.complete(
            step_id,
            output=json.dumps(outputs, ensure_ascii=False, separators=(",", ":")),
            structured={"items": outputs, "failed": len(state.failed)},
        )
        run.edit(step_id).cost = cost  # already counted item by item


def item_ended(run: Run, step_id: str, index: int, event: ChildExecutionEnded) -> None:
    st = run.edit(step_id)
    state = st.for_each
    assert state is not None
    state.running.remove(index)
    if event.status != "completed":
        detail = f": {event.error_code} {event.error_message}".rstrip() if event.error_code else ""
        if _item_failed(run, step_id, st, index, f"child {event.status}{detail}"):
            return
    else:
        if event.cost is not None:
            problem = run.currency_problem(event.cost)
            if problem:
                if _item_failed(run, step_id, st, index, problem):
                    return
                fill(run, step_id)
                return
            state.cost = event.cost if state.cost is None else state.cost + event.cost
        output: Any = (
            dict(event.structured) if event.structured is not None else parse_output(event.output)
        )
        state.outputs[index] = output
        if event.cost is not None:
            run.add_cost(event.cost)
    if run.is_live:
        fill(run, step_id)


def item_refused(run: Run, step_id: str, index: int, why: str) -> None:
    """An item's child could not start (refused for good): the item failed."""
    st = run.edit(step_id)
    state = st.for_each
    assert state is not None
    state.running.remove(index)
    if not _item_failed(run, step_id, st, index, f"its start was refused: {why}") and run.is_live:
        fill(run, step_id)


def _item_failed(run: Run, step_id: str, st: StepState, index: int, why: str) -> bool:
    """Record a failed item; True when that fails the attempt (beyond the tolerated)."""
    state = st.for_each
    assert state is not None
    state.failed.append(index)
    state.outputs[index] = None
    config = run.process.step(step_id).config
    assert isinstance(config, SubProcessConfig)
    if len(state.failed) <= config.tolerated_failures:
        return False
    message = f"item {index} failed ({why}); {len(state.failed)} failed"
    run.fail_attempt(step_id, Failure(errors.CHILD_EXECUTION_FAILED, message))
    return True


def cancel_running(run: Run, st: StepState, reason: str) -> None:
    """Cancel the children still running (the attempt is over)."""
    state = st.for_each
    if state is None:
        return
    for index in state.running:
        run.commands.append(CancelChildExecution(item_key(st.request, index), reason))
    state.running.clear()
