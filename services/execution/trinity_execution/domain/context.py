"""The context expressions see: ``input``, ``steps.<id>.*``, ``execution``, ``process``.

Built lazily: reading ``steps.review`` builds that one step's view, so a decision
costs nothing for the steps its expressions do not read. Every step of the
definition is defined (a step that has not run shows status ``pending`` and output
``None``); an unknown step id or field is an undefined-name error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.state import ExecutionState, StepState


def parse_output(output: str | None) -> Any:
    """The output as JSON when it is JSON (object, array, number...), else the text."""
    if output is None:
        return None
    text = output.strip()
    if not text or text[0] not in '{["-0123456789tfn':
        return output
    try:
        return json.loads(text)
    except ValueError:
        return output


class StepsView(Mapping[str, Any]):
    """``steps`` in the context: one read-only view per step, built when read."""

    __slots__ = ("_parsed", "_process", "_state")

    def __init__(self, process: CompiledProcess, state: ExecutionState) -> None:
        self._process = process
        self._state = state
        self._parsed: dict[tuple[str, int, int], Any] = {}

    def __getitem__(self, step_id: str) -> dict[str, Any]:
        if step_id not in self._process.steps:
            raise KeyError(step_id)
        return self._view(step_id, self._state.step(step_id))

    def __iter__(self) -> Iterator[str]:
        return iter(self._process.graph.step_ids)

    def __len__(self) -> int:
        return self._process.size

    def _view(self, step_id: str, st: StepState) -> dict[str, Any]:
        return {
            "id": step_id,
            "status": str(st.status),
            "output": self._output(step_id, st),
            "text": st.output,
            "decision": st.decision or None,
            "decided_by": st.decided_by or None,
            "comment": st.comment or None,
            "cost": None if st.cost is None else st.cost.amount,
            "iteration": st.iteration,
            "attempt": st.attempt,
            "error": None
            if st.error is None
            else {"code": st.error.code, "message": st.error.message},
            "routes": list(st.routes),
            "history": list(st.history),
        }

    def _output(self, step_id: str, st: StepState) -> Any:
        if st.structured is not None:
            return st.structured
        if st.routes:
            return list(st.routes)
        key = (step_id, st.iteration, st.attempt)
        if key not in self._parsed:
            self._parsed[key] = parse_output(st.output)
        return self._parsed[key]


def completion_view(
    process: CompiledProcess, state: ExecutionState, step_id: str, iteration: int
) -> dict[str, Any]:
    """``step`` in a compensation's templates: the step as it completed in `iteration`.

    The current iteration reads the live state; an earlier one its history summary
    (output cut to 2,000 characters); one no longer kept only its id and iteration."""
    st = state.step(step_id)
    if st.iteration == iteration:
        return StepsView(process, state)[step_id]
    kept = next((h for h in st.history if h.get("iteration") == iteration), None)
    if kept is None:
        return {"id": step_id, "iteration": iteration, "status": "completed", "output": None}
    cost = kept.get("cost")
    error = kept.get("error")
    return {
        "id": step_id,
        "status": kept.get("status", "completed"),
        "output": parse_output(kept.get("output")),
        "text": kept.get("output"),
        "decision": kept.get("decision"),
        "comment": kept.get("comment"),
        "cost": None if cost is None else cost["amount"],
        "iteration": iteration,
        "attempt": kept.get("attempt", 0),
        "error": None if error is None else {"code": error["code"], "message": error["message"]},
    }


def build_context(process: CompiledProcess, state: ExecutionState) -> dict[str, Any]:
    """The expression context of the execution as it is now (views read the live state)."""
    total = state.total_cost
    return {
        "input": state.input,
        "steps": StepsView(process, state),
        "execution": {
            "id": state.execution_id,
            "status": str(state.status),
            "triggered_by": state.triggered_by,
            "trigger_kind": str(state.trigger_kind),
            "started_at": None if state.started_at is None else state.started_at.isoformat(),
            "total_cost": None if total is None else total.amount,
            "currency": None if total is None else total.currency,
        },
        "process": {
            "id": process.definition_id,
            "name": process.name,
            "version": process.version,
            "labels": dict(process.spec.labels),
        },
    }
