"""Micro-benchmark: what one for_each item costs with 10, 100 and 1,000 items, for a
sub_process body (one ChildExecutionEnded per item) and an agent_task body (one
WorkCompleted per item).

Each item is one decision plus what the store writes for it: the step's hot state as
compact JSON (what goes back into the execution's row) and the ended item's result row
(infrastructure/item_store.py), so the figure shows whether an item's cost grows with
the number of items. With 10 items (``max_concurrency`` 10) every item starts in the
first decision, so an item's decision only ends it; with 100 and 1,000 each one also
starts the next: compare 100 with 1,000. CPU time (process_time), so other work on the
machine does not count. Run by ``make bench`` (tests/bench/micro.py) or directly.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from trinity_execution.domain import (
    ChildExecutionEnded,
    CompiledProcess,
    Decision,
    ExecutionState,
    RequestWork,
    StartChildExecution,
    StartExecution,
    WorkCompleted,
    decide,
)
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step, SubProcessConfig

SIZES = (10, 100, 1_000)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ITEMS = "{{{{ input['items'][:{n}] }}}}"

Body = Callable[[int], Step]
Answer = Callable[[ExecutionState, Any, datetime], Any]


def child_body(n: int) -> Step:
    config = SubProcessConfig(
        "per-item", input={"n": "{{ item }}"}, for_each=ITEMS.format(n=n), max_concurrency=10
    )
    return Step("files", config)


def agent_body(n: int) -> Step:
    config = AgentTaskConfig(
        "a", "review {{ item }}", for_each=ITEMS.format(n=n), max_concurrency=10
    )
    return Step("files", config)


def child_answer(state: ExecutionState, command: Any, now: datetime) -> Any:
    if not isinstance(command, StartChildExecution):
        return None
    return ChildExecutionEnded(
        now=now,
        request=command.key,
        child_execution_id=command.child_execution_id,
        status="completed",
        output=f"out {command.input['n']}",
    )


def work_answer(state: ExecutionState, command: Any, now: datetime) -> Any:
    if not isinstance(command, RequestWork) or command.correlation is None:
        return None
    ref = command.correlation
    return WorkCompleted(
        now=now,
        step_id=ref.step_id,
        iteration=ref.iteration,
        attempt=ref.attempt,
        output=f"out {command.payload.message}",  # type: ignore[union-attr]
        request=command.key,
    )


def fan_out(body: Body, n: int) -> ProcessSpec:
    after = Step("after", AgentTaskConfig("a", "done"), depends_on=("files",))
    return ProcessSpec(name="bench-fan-out", steps=(body(n), after))


def write(decision: Decision) -> int:
    """What the store writes for the decision's for_each step; the step's hot JSON size."""
    step = decision.state.steps["files"]
    hot = json.dumps(step.to_dict())
    each = step.for_each
    if each is not None:
        for result in each.unsaved_results():
            json.dumps(result[1])
        each.saved_results, each.saved_items = len(each.results), True  # as the store does
    return len(hot)


def drive(process: CompiledProcess, n: int, answer: Answer) -> tuple[float, int, int]:
    """(seconds spent on the items' decisions and writes, facts, largest hot step JSON
    while the step waits)."""
    now = T0
    decision = decide(
        process, None, StartExecution(now=now, execution_id="ex", input={"items": list(range(n))})
    )
    write(decision)
    state = decision.state
    queue = [e for c in decision.commands if (e := answer(state, c, now)) is not None]
    spent, facts, largest = 0.0, 0, 0
    while queue:
        event = queue.pop(0)
        now += timedelta(milliseconds=1)
        began = time.process_time()
        decision = decide(process, state, _at(event, now))
        size = write(decision)
        spent += time.process_time() - began
        state = decision.state
        if str(state.step("files").status) == "waiting":
            largest = max(largest, size)
        facts += len(decision.facts)
        queue.extend(e for c in decision.commands if (e := answer(state, c, now)) is not None)
    assert str(state.step("files").status) == "completed"
    return spent, facts, largest


def _at(event: Any, now: datetime) -> Any:
    from dataclasses import replace

    return replace(event, now=now)


def run(quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, body, answer in (
        ("items", child_body, child_answer),
        ("agent_items", agent_body, work_answer),
    ):
        for n in SIZES:
            process = CompiledProcess.compile("bench", "1", fan_out(body, n))
            runs = [drive(process, n, answer) for _ in range(1 if quick else 3)]
            results[f"{label}_{n}"] = {
                "item_us": round(statistics.median(r[0] for r in runs) / n * 1e6, 1),
                "facts_per_item": round(runs[0][1] / n, 2),
                "step_state_bytes": runs[0][2],
            }
        growth = "item_growth" if label == "items" else "agent_item_growth"
        for base in (10, 100):
            results[f"{growth}_1000_vs_{base}"] = round(
                results[f"{label}_1000"]["item_us"] / results[f"{label}_{base}"]["item_us"], 2
            )
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
