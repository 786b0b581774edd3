"""`status` lists a looping step's earlier iterations and an overspent budget (issue 18)."""

from __future__ import annotations

import argparse
import io
from typing import Any

from trinity.process.common.v1 import types_pb2
from trinity.process.execution.v1 import execution_pb2 as E
from trinity_cli.commands.executions import _print_execution
from trinity_cli.context import Context


def usd(nanos: int, units: int = 0) -> types_pb2.Money:
    return types_pb2.Money(currency_code="USD", units=units, nanos=nanos)


def test_status_shows_every_kept_iteration_and_the_overspend() -> None:
    execution = E.Execution(
        id="exe-1",
        process_name="loop",
        process_version="1.0",
        status=E.EXECUTION_STATUS_FAILED,
        total_cost=usd(300_000_000),
        budget=usd(250_000_000),
    )
    step = execution.steps.add(
        step_id="work", kind=E.STEP_KIND_AGENT_TASK, status=E.STEP_STATUS_COMPLETED, iteration=4
    )
    step.output = "round 4"
    step.iterations_omitted = 1
    for number in (2, 3):
        it = step.iterations.add(
            iteration=number, status=E.STEP_STATUS_COMPLETED, output=f"round {number}"
        )
        it.cost.CopyFrom(usd(100_000_000))
        it.duration.FromSeconds(2)
    out = io.StringIO()
    clients: Any = None
    _print_execution(Context(argparse.Namespace(), clients, "", out=out), execution)
    text = out.getvalue()
    assert "0.30 USD of 0.25 USD, 0.05 USD over" in text
    lines = [line.split() for line in text.splitlines() if line.startswith("work")]
    assert [line[0] for line in lines] == ["work#…", "work#2", "work#3", "work"]
    assert lines[1][-2:] == ["round", "2"] and "0.10" in lines[1]


def test_status_shows_a_failed_compensation_and_its_step() -> None:
    execution = E.Execution(
        id="exe-2",
        process_name="saga",
        process_version="1.0",
        status=E.EXECUTION_STATUS_COMPENSATION_FAILED,
    )
    execution.steps.add(
        step_id="reserve", kind=E.STEP_KIND_AGENT_TASK, status=E.STEP_STATUS_COMPLETED
    )
    progress = execution.compensation
    progress.reason = E.COMPENSATION_REASON_FAILURE
    progress.failed_step_id = "reserve"
    progress.steps.add(
        step_id="draft", iteration=2, status=E.STEP_COMPENSATION_STATUS_COMPENSATED, attempt=1
    ).output = "undone"
    failed = progress.steps.add(
        step_id="reserve", iteration=1, status=E.STEP_COMPENSATION_STATUS_FAILED, attempt=3
    )
    failed.error.code, failed.error.message = "AGENT_ERROR", "exit 3"
    out = io.StringIO()
    clients: Any = None
    _print_execution(Context(argparse.Namespace(), clients, "", out=out), execution)
    text = out.getvalue()
    assert "status        compensation_failed" in text
    assert "compensation  failure: 1/2 undone · failed at reserve" in text
    undo = [line.split() for line in text.splitlines() if line.startswith(("UNDO", "draft"))]
    assert undo[0] == ["UNDO", "ITER", "STATUS", "ATTEMPT", "RESULT"]
    assert undo[1] == ["draft", "2", "compensated", "1", "undone"]
    (reserve,) = [line for line in text.splitlines() if line.startswith("reserve ") and "3" in line]
    assert "failed" in reserve and "AGENT_ERROR: exit 3" in reserve


def test_the_status_line_names_the_completion_being_undone() -> None:
    from trinity_cli.compensation import undoing

    execution = E.Execution(status=E.EXECUTION_STATUS_COMPENSATING)
    execution.compensation.steps.add(
        step_id="ship", iteration=1, status=E.STEP_COMPENSATION_STATUS_COMPENSATED
    )
    execution.compensation.steps.add(
        step_id="draft", iteration=2, status=E.STEP_COMPENSATION_STATUS_WAITING
    )
    assert undoing(execution) == "undoing draft#2"
    assert undoing(E.Execution()) == ""
