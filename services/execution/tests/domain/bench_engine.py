"""Micro-benchmark of the pure engine: decisions per second on 10-, 100- and 1,000-step
processes. The per-decision cost should stay flat as the process grows.

    run(quick: bool) -> dict     # used by the benchmark harness
    python services/execution/tests/domain/bench_engine.py [--quick]

Two shapes per size: a chain (each completion starts the next step) and layers of 10
parallel steps, each joining two steps of the layer above. One execution is driven
from start to completion (one StartExecution and one WorkCompleted per step), as many
times as fit in the time budget (CPU time of the process, so other load on the
machine skews the figures less). Also measured: the compact state's round trip
(to_dict → JSON → from_dict) of the finished execution, which the service pays per
decision.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from trinity_execution.domain import (
    CompiledProcess,
    ExecutionState,
    RequestWork,
    StartExecution,
    WorkCompleted,
    decide,
)
from trinity_process_model.model import (
    AgentTaskConfig,
    Money,
    ProcessSpec,
    Step,
)

SIZES = (10, 100, 1000)
_clock = time.process_time
"""CPU time of this process: a busy machine (other processes) skews it far less than wall time."""
T0 = datetime(2026, 1, 1, tzinfo=UTC)
COST = Money(Decimal("0.001"), "USD")


def _step(i: int, deps: tuple[str, ...]) -> Step:
    config = AgentTaskConfig("agent", "step {{ execution.id }}: {{ input.topic }}")
    return Step(f"s{i}", config, depends_on=deps)


def chain(n: int) -> ProcessSpec:
    steps = [_step(i, (f"s{i - 1}",) if i else ()) for i in range(n)]
    return ProcessSpec(name=f"chain-{n}", steps=tuple(steps))


def layers(n: int, width: int = 10) -> ProcessSpec:
    steps = []
    for i in range(n):
        layer, pos = divmod(i, width)
        if layer == 0:
            deps: tuple[str, ...] = ()
        else:
            above = (layer - 1) * width
            deps = (f"s{above + pos}", f"s{above + (pos + 1) % width}")
        steps.append(_step(i, deps))
    return ProcessSpec(name=f"layers-{n}", steps=tuple(steps))


def drive(process: CompiledProcess) -> tuple[int, float, ExecutionState]:
    """Run one execution to completion; (decisions, seconds spent in decide, final state)."""
    now = T0
    spent = 0.0
    began = _clock()
    decision = decide(
        process,
        None,
        StartExecution(now=now, execution_id="bench", input={"topic": "x"}, triggered_by="b"),
    )
    spent += _clock() - began
    decisions = 1
    queue = [c for c in decision.commands if isinstance(c, RequestWork)]
    state = decision.state
    while queue:
        request = queue.pop()
        ref = request.correlation
        assert ref is not None
        now += timedelta(seconds=1)
        event = WorkCompleted(
            now=now,
            step_id=ref.step_id,
            iteration=ref.iteration,
            attempt=ref.attempt,
            output="done",
            cost=COST,
        )
        began = _clock()
        decision = decide(process, state, event)
        spent += _clock() - began
        decisions += 1
        state = decision.state
        queue.extend(c for c in decision.commands if isinstance(c, RequestWork) and c.correlation)
    assert str(state.status) == "completed", state.status
    return decisions, spent, state


def measure(spec: ProcessSpec, budget_s: float) -> dict[str, Any]:
    compile_began = _clock()
    process = CompiledProcess.compile("bench", "1", spec)
    compile_ms = (_clock() - compile_began) * 1000
    rates: list[float] = []
    total_decisions = 0
    deadline = _clock() + budget_s
    state: ExecutionState | None = None
    while _clock() < deadline or len(rates) < 3:
        decisions, spent, state = drive(process)
        rates.append(decisions / spent)
        total_decisions += decisions
    assert state is not None
    round_trips = []
    for _ in range(5):
        began = _clock()
        ExecutionState.from_dict(json.loads(json.dumps(state.to_dict())))
        round_trips.append(_clock() - began)
    rate = statistics.median(rates)
    return {
        "steps": len(spec.steps),
        "decisions_per_second": round(rate),
        "us_per_decision": round(1e6 / rate, 1),
        "runs": len(rates),
        "decisions": total_decisions,
        "compile_ms": round(compile_ms, 2),
        "state_bytes": len(json.dumps(state.to_dict())),
        "state_round_trip_ms": round(statistics.median(round_trips) * 1000, 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Decisions per second of the engine on 10-, 100- and 1,000-step processes."""
    budget = 0.3 if quick else 2.0
    results: dict[str, Any] = {}
    for shape, build in (("chain", chain), ("layers", layers)):
        for n in SIZES:
            results[f"{shape}_{n}"] = measure(build(n), budget)
    for shape in ("chain", "layers"):
        small = results[f"{shape}_10"]["us_per_decision"]
        large = results[f"{shape}_1000"]["us_per_decision"]
        results[f"{shape}_flatness_1000_vs_10"] = round(large / small, 2)
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
