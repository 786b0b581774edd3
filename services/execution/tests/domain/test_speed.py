"""Each decision costs in proportion to the steps it touches, not to the process size."""

from __future__ import annotations

from typing import Any

import pytest
from bench_engine import chain, drive, layers
from engine_support import T0

from trinity_execution.domain import CompiledProcess, RequestWork, StartExecution, decide
from trinity_execution.domain import context as context_module
from trinity_execution.domain import run as run_module
from trinity_execution.domain.state import ExecutionState


@pytest.fixture
def assessed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = run_module.assess

    def counting(graph: Any, state: ExecutionState, step_id: str) -> Any:
        calls.append(step_id)
        return original(graph, state, step_id)

    monkeypatch.setattr(run_module, "assess", counting)

    def no_scan(self: Any) -> Any:
        raise AssertionError("a decision iterated over every step")

    monkeypatch.setattr(context_module.StepsView, "__iter__", no_scan)
    return calls


@pytest.mark.parametrize("build", [chain, layers])
def test_a_decision_assesses_only_the_dependents_it_unblocks(
    build: Any, assessed: list[str]
) -> None:
    process = CompiledProcess.compile("d", "1", build(500))
    decisions, _, state = drive(process)
    assert decisions == 501
    # each completion looks at its own dependents (at most 2 here), never at all steps
    assert len(assessed) <= 10 + 2 * 500
    assert state.finished == 500


def test_state_holds_only_the_steps_something_happened_to() -> None:
    process = CompiledProcess.compile("d", "1", chain(1000))
    decision = decide(process, None, StartExecution(now=T0, execution_id="e", input={"topic": "x"}))
    assert set(decision.state.to_dict()["steps"]) == {"s0"}
    assert [c.key for c in decision.commands if isinstance(c, RequestWork)] == ["e/s0/1/1"]


def test_graph_is_indexed_once_per_version() -> None:
    process = CompiledProcess.compile("d", "1", layers(1000))
    graph = process.graph
    assert graph.dependents("s0") == ("s10", "s19")
    assert process.graph is graph
