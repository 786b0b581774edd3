"""Micro-benchmark: what one for_each item costs the engine with 10, 100 and 1,000 items.

Each item is one ChildExecutionEnded decision plus writing the changed step back as the
store does (its compact JSON), so the figure shows whether an item's cost grows with the
number of items. Run by ``make bench`` (tests/bench/micro.py) or directly.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from trinity_execution.domain import (
    ChildExecutionEnded,
    CompiledProcess,
    StartChildExecution,
    StartExecution,
    decide,
)
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step, SubProcessConfig

SIZES = (10, 100, 1_000)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fan_out(n: int) -> ProcessSpec:
    config = SubProcessConfig(
        "per-item",
        input={"n": "{{ item }}"},
        for_each=f"{{{{ input['items'][:{n}] }}}}",
        max_concurrency=10,
    )
    return ProcessSpec(
        name="bench-fan-out",
        steps=(
            Step("files", config),
            Step("after", AgentTaskConfig("a", "done"), depends_on=("files",)),
        ),
    )


def drive(process: CompiledProcess, n: int) -> tuple[float, int, int]:
    """(seconds spent on the items' decisions and writes, facts, largest step JSON)."""
    now = T0
    decision = decide(
        process, None, StartExecution(now=now, execution_id="ex", input={"items": list(range(n))})
    )
    state = decision.state
    queue = [c for c in decision.commands if isinstance(c, StartChildExecution)]
    spent, facts, largest = 0.0, 0, 0
    while queue:
        command = queue.pop(0)
        now += timedelta(milliseconds=1)
        began = time.perf_counter()
        decision = decide(
            process,
            state,
            ChildExecutionEnded(
                now=now,
                request=command.key,
                child_execution_id=command.child_execution_id,
                status="completed",
                output=f"out {command.input['n']}",
            ),
        )
        written = json.dumps(decision.state.steps["files"].to_dict())
        spent += time.perf_counter() - began
        largest = max(largest, len(written))
        facts += len(decision.facts)
        state = decision.state
        queue.extend(c for c in decision.commands if isinstance(c, StartChildExecution))
    assert str(state.step("files").status) == "completed"
    return spent, facts, largest


def run(quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for n in SIZES:
        process = CompiledProcess.compile("bench", "1", fan_out(n))
        runs = [drive(process, n) for _ in range(1 if quick else 3)]
        results[f"items_{n}"] = {
            "item_us": round(statistics.median(r[0] for r in runs) / n * 1e6, 1),
            "facts_per_item": round(runs[0][1] / n, 2),
            "step_state_bytes": runs[0][2],
        }
    results["item_growth_1000_vs_10"] = round(
        results["items_1000"]["item_us"] / results["items_10"]["item_us"], 2
    )
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
