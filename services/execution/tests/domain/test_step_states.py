"""Steps kept apart from the execution's header: decoded when read, rewritten when changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from trinity_execution.domain import ExecutionState, StepState, StepStates, StepStatus

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_a_step_is_decoded_only_when_read_and_once() -> None:
    done = StepState(status=StepStatus.COMPLETED, output="text", started_at=NOW, ended_at=NOW)
    steps = StepStates({"a": json.dumps(done.to_dict()), "b": done.to_dict(), "c": "not json"})
    assert len(steps) == 3 and list(steps) == ["a", "b", "c"] and "c" in steps
    first = steps["a"]
    assert first == done and steps.get("a") is first  # decoded once, then kept
    assert steps.get("b") == done
    assert steps.get("missing") is None and steps.get("missing", done) is done
    # "c" was never read: nothing decoded it (its text is not even JSON).
    assert steps._steps["c"] == "not json"


def test_a_copy_changes_apart_and_the_state_comes_back_from_its_parts() -> None:
    state = ExecutionState("ex", "def", "1")
    running = StepState(status=StepStatus.RUNNING, attempt=1, request="ex/a/1/1")
    state.steps["a"] = running
    parts = {sid: json.dumps(st.to_dict()) for sid, st in state.steps.items()}
    loaded = ExecutionState.from_parts(state.header_dict(), parts)
    assert loaded.to_dict() == state.to_dict()
    clone = loaded.clone()
    clone.steps["b"] = StepState(status=StepStatus.READY)
    del clone.steps["a"]
    assert list(loaded.steps) == ["a"] and loaded.step("a") == running
    assert list(clone.steps) == ["b"]
