"""Lifecycle guards and the compact form of the state."""

from __future__ import annotations

import json

import pytest
from engine_support import Driver, it3_spec, usd

from trinity_execution.domain import (
    ExecutionState,
    ExecutionStatus,
    InvalidTransition,
    StepState,
    StepStatus,
)
from trinity_execution.domain.state import EXECUTION_TRANSITIONS, STEP_TRANSITIONS


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (StepStatus.PENDING, StepStatus.COMPLETED),
        (StepStatus.COMPLETED, StepStatus.RUNNING),
        (StepStatus.SKIPPED, StepStatus.COMPLETED),
        (StepStatus.READY, StepStatus.COMPLETED),
    ],
)
def test_invalid_step_transitions_are_refused(start: StepStatus, to: StepStatus) -> None:
    with pytest.raises(InvalidTransition):
        StepState(status=start).move(to)


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (ExecutionStatus.COMPLETED, ExecutionStatus.RUNNING),
        (ExecutionStatus.CANCELLED, ExecutionStatus.RUNNING),
        (ExecutionStatus.PENDING, ExecutionStatus.PAUSED),
        (ExecutionStatus.FAILED, ExecutionStatus.COMPLETED),
    ],
)
def test_invalid_execution_transitions_are_refused(
    start: ExecutionStatus, to: ExecutionStatus
) -> None:
    state = ExecutionState("e", "d", "1", status=start)
    with pytest.raises(InvalidTransition):
        state.move(to)


def test_every_status_has_its_transitions() -> None:
    assert set(STEP_TRANSITIONS) == set(StepStatus)
    assert set(EXECUTION_TRANSITIONS) == set(ExecutionStatus)
    assert not EXECUTION_TRANSITIONS[ExecutionStatus.COMPLETED]


def test_state_round_trips_compactly() -> None:
    d = Driver.of(it3_spec())
    d.start(topic="x")
    d.complete("research", "findings", cost=usd("1.10"))
    d.decide_approval("review", "needs_changes", "more")
    assert d.state is not None
    data = d.state.to_dict()
    text = json.dumps(data)
    assert '"1.10"' in text  # Decimal as str
    assert ExecutionState.from_dict(json.loads(text)).to_dict() == data
    # only the steps something happened to are stored
    assert set(data["steps"]) == {
        "research",
        "review",
        "decide",
        "revise",
        "publish",
        "wait",
        "announce",
    }
    assert "back_to_review" not in data["steps"]


def test_pristine_step_is_pending_iteration_one() -> None:
    state = ExecutionState("e", "d", "1")
    assert state.step("anything").status is StepStatus.PENDING
    assert state.step("anything").iteration == 1
    assert state.steps == {}
