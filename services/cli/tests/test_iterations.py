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
