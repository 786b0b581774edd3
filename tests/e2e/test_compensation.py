"""Compensation through the real suite (issue 16 §1), on SQLite and PostgreSQL.

The undo agent appends what it is asked to a log file beside the executor's config, so
the test reads which compensations ran, how often and in which order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1 import facts_pb2 as execution_facts
from trinity_platform.grpc_errors import error_details

pytestmark = pytest.mark.e2e

EXECUTOR_CONFIG = """
agents:
  worker:
    backend: script
    file: replies.yaml
  broken:
    backend: command
    command: [sh, -c, 'echo "cannot: $1" >&2; exit 3', broken, "{message}"]
  undoer:
    backend: command
    command: [sh, -c, 'echo "$1" >> undo.log; echo "undone: $1"', undo, "{message}"]
    cwd: .
  flaky:
    backend: command
    command:
      - sh
      - -c
      - 'if [ -e "$1.tried" ]; then echo "$1" >> undo.log; echo ok; else touch "$1.tried"; exit 1; fi'
      - flaky
      - "{message}"
    cwd: .
  gated:
    backend: command
    command: [sh, -c, 'while [ ! -e "$1" ]; do sleep 0.05; done; echo opened', gate, "{message}"]
"""
EXECUTOR_FILES = {"replies.yaml": "replies:\n  - output: 'done: {message}'\n"}

# reserve, then a draft written twice (a loop), then ship fails: the three completions
# are undone latest first; reserve's undo fails once and is retried by its policy.
SAGA = """
name: saga
steps:
  - id: reserve
    agent_task: {agent: worker, message: "reserve {{ input.tag }}"}
    compensate:
      agent_task: {agent: flaky, message: "{{ input.tag }}-release-{{ step.output }}"}
      retry: {max_attempts: 2, initial_backoff: 1s}
  - id: draft
    depends_on: [reserve]
    agent_task: {agent: worker, message: "draft {{ steps.draft.iteration }}"}
    compensate:
      agent_task: {agent: undoer, message: "{{ input.tag }}-undraft-{{ step.iteration }}"}
  - id: again
    depends_on: [draft]
    gateway:
      routes:
        - {target: draft, condition: "{{ steps.draft.iteration < 2 }}", max_iterations: 2}
        - {target: ship, is_default: true}
  - id: ship
    agent_task: {agent: broken, message: "ship {{ input.tag }}"}
"""

# reserve, then wait at work that never ends by itself: cancelled with compensate.
WAITING = """
name: waiting
steps:
  - id: reserve
    agent_task: {agent: worker, message: "reserve {{ input.tag }}"}
    compensate:
      agent_task: {agent: undoer, message: "{{ input.tag }}-release"}
  - id: wait
    depends_on: [reserve]
    agent_task: {agent: gated, message: "{{ input.gate }}"}
"""

# the undo itself fails for good: the execution ends COMPENSATION_FAILED at reserve.
STUCK = """
name: stuck
steps:
  - id: reserve
    agent_task: {agent: worker, message: "reserve {{ input.tag }}"}
    compensate:
      agent_task: {agent: broken, message: "release {{ input.tag }}"}
  - id: ship
    depends_on: [reserve]
    agent_task: {agent: broken, message: "ship {{ input.tag }}"}
"""

S = execution_pb2
pb = execution_service_pb2
TERMINAL = (
    execution_facts.ProcessCompleted,
    execution_facts.ProcessFailed,
    execution_facts.ProcessCancelled,
    execution_facts.CompensationFailed,
)


def undo_log(client: Any, tag: str) -> list[str]:
    """The undo agents' lines for one execution (tagged), in the order they ran."""
    log = Path(client.suite.executor_config).parent / "undo.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith(f"{tag}-")]


async def test_a_failure_undoes_each_completion_once_latest_first(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(SAGA)
    tag = client.key("saga")
    execution_id = await client.trigger("saga", tag=tag)
    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_FAILED, done
    assert done.error.code == "AGENT_ERROR"
    progress = done.compensation
    assert progress.reason == S.COMPENSATION_REASON_FAILURE
    assert [(s.step_id, s.iteration, s.status) for s in progress.steps] == [
        ("draft", 2, S.STEP_COMPENSATION_STATUS_COMPENSATED),
        ("draft", 1, S.STEP_COMPENSATION_STATUS_COMPENSATED),
        ("reserve", 1, S.STEP_COMPENSATION_STATUS_COMPENSATED),
    ]
    assert [s.attempt for s in progress.steps] == [1, 1, 2]  # reserve's undo retried once
    assert not progress.failed_step_id and progress.HasField("end_time")
    release = f"{tag}-release-done: reserve {tag}"
    assert undo_log(client, tag) == [f"{tag}-undraft-2", f"{tag}-undraft-1", release]

    facts = await client.facts(execution_id, TERMINAL)
    names = [type(f).__name__ for f in facts]
    at = names.index("CompensationStarted")
    assert names[at:] == [
        "CompensationStarted",
        "StepCompensated",
        "StepCompensated",
        "StepCompensated",
        "CompensationCompleted",
        "ProcessFailed",
    ]
    started = facts[at]
    assert [(t.step_id, t.iteration) for t in started.targets] == [
        ("draft", 2),
        ("draft", 1),
        ("reserve", 1),
    ]
    assert facts[at + 3].output.strip() == "ok"
    assert facts[-1].failed_step_id == "ship"

    # What it did is undone: it cannot be redriven.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.executions.RetryExecution(
            pb.RetryExecutionRequest(request_id=client.key("retry"), execution_id=execution_id)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value)[0] == "EXECUTION_COMPENSATED"


async def test_cancel_with_compensate_undoes_then_cancels(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(WAITING)
    tag = client.key("wait")
    gate = tmp_path / "gate"
    execution_id = await client.trigger("waiting", tag=tag, gate=str(gate))
    await client.wait(
        execution_id,
        lambda e: any(s.step_id == "wait" and s.status == S.STEP_STATUS_RUNNING for s in e.steps),
    )
    request = pb.CancelExecutionRequest(
        request_id=client.key("cancel"),
        execution_id=execution_id,
        reason="changed my mind",
        compensate=True,
    )
    first = await client.executions.CancelExecution(request)
    again = await client.executions.CancelExecution(request)
    assert first == again  # idempotent by request id
    assert first.execution.status == S.EXECUTION_STATUS_COMPENSATING
    done = await client.wait(execution_id)
    gate.write_text("open")  # the cancelled work may end now; it changes nothing
    assert done.status == S.EXECUTION_STATUS_CANCELLED, done
    assert done.cancel_reason == "changed my mind"
    assert done.compensation.reason == S.COMPENSATION_REASON_CANCELLATION
    assert undo_log(client, tag) == [f"{tag}-release"]
    names = [type(f).__name__ for f in await client.facts(execution_id, TERMINAL)]
    assert names[-4:] == [
        "CompensationStarted",
        "StepCompensated",
        "CompensationCompleted",
        "ProcessCancelled",
    ]
    # A second cancel of the ended execution is refused, a plain one ends without undo.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.executions.CancelExecution(
            pb.CancelExecutionRequest(
                request_id=client.key("cancel"), execution_id=execution_id, compensate=True
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    plain_tag = client.key("plain")
    plain = await client.trigger("waiting", tag=plain_tag, gate=str(tmp_path / "never"))
    await client.wait(
        plain,
        lambda e: any(s.step_id == "wait" and s.status == S.STEP_STATUS_RUNNING for s in e.steps),
    )
    reply = await client.executions.CancelExecution(
        pb.CancelExecutionRequest(request_id=client.key("cancel"), execution_id=plain)
    )
    assert reply.execution.status == S.EXECUTION_STATUS_CANCELLED
    assert not reply.execution.HasField("compensation")
    assert undo_log(client, plain_tag) == []


async def test_a_compensation_failing_for_good_ends_compensation_failed(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(STUCK)
    execution_id = await client.trigger("stuck", tag=client.key("stuck"))
    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_COMPENSATION_FAILED, done
    assert done.compensation.failed_step_id == "reserve"
    (entry,) = done.compensation.steps
    assert (entry.step_id, entry.status) == ("reserve", S.STEP_COMPENSATION_STATUS_FAILED)
    assert entry.error.code == "AGENT_ERROR"
    facts = await client.facts(execution_id, TERMINAL)
    failed = facts[-1]
    assert isinstance(failed, execution_facts.CompensationFailed)
    assert (failed.step_id, failed.iteration, failed.not_compensated) == ("reserve", 1, 1)
    assert not any(isinstance(f, execution_facts.ProcessFailed) for f in facts)
    listed = await client.executions.ListExecutions(
        pb.ListExecutionsRequest(
            process_name="stuck", status=S.EXECUTION_STATUS_COMPENSATION_FAILED
        )
    )
    assert execution_id in [e.id for e in listed.executions]
    for call, request in (
        (
            client.executions.CancelExecution,
            pb.CancelExecutionRequest(request_id=client.key("c"), execution_id=execution_id),
        ),
        (
            client.executions.RetryExecution,
            pb.RetryExecutionRequest(request_id=client.key("r"), execution_id=execution_id),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(request)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


CHILD = """
name: child-undo
steps:
  - id: reserve
    agent_task: {agent: worker, message: "child reserve {{ input.tag }}"}
    compensate:
      agent_task: {agent: undoer, message: "{{ input.tag }}-child-release"}
  - id: wait
    depends_on: [reserve]
    agent_task: {agent: gated, message: "{{ input.gate }}"}
"""
PARENT = """
name: parent-undo
steps:
  - id: book
    agent_task: {agent: worker, message: "book"}
    compensate:
      agent_task: {agent: undoer, message: "{{ input.tag }}-parent-unbook"}
  - id: call
    depends_on: [book]
    sub_process: {process: child-undo, input: {tag: "{{ input.tag }}", gate: "{{ input.gate }}"}}
"""


async def child_waits(client: Any, child: str) -> bool:
    try:
        execution = await client.get(child)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return any(s.step_id == "wait" and s.status == S.STEP_STATUS_RUNNING for s in execution.steps)


async def test_cancel_with_compensate_undoes_in_the_running_child_too(  # type: ignore[no-untyped-def]
    api, tmp_path: Path
) -> None:
    client = api
    await client.publish(CHILD)
    await client.publish(PARENT)
    tag = client.key("family")
    parent = await client.trigger("parent-undo", tag=tag, gate=str(tmp_path / "never"))
    running = await client.wait(
        parent, lambda e: any(s.step_id == "call" and s.child_execution_id for s in e.steps)
    )
    (call,) = [s for s in running.steps if s.step_id == "call"]
    child = call.child_execution_id  # named at once; it exists once its start is sent
    deadline = time.monotonic() + 45
    while not await child_waits(client, child):
        assert time.monotonic() < deadline, "the child never reached its wait"
        await asyncio.sleep(0.05)
    await client.executions.CancelExecution(
        pb.CancelExecutionRequest(
            request_id=client.key("cancel"), execution_id=parent, reason="stop", compensate=True
        )
    )
    assert (await client.wait(parent)).status == S.EXECUTION_STATUS_CANCELLED
    undone_child = await client.wait(child)
    assert undone_child.status == S.EXECUTION_STATUS_CANCELLED, undone_child
    assert undone_child.cancelled_by == f"execution:{parent}"
    assert undone_child.compensation.reason == S.COMPENSATION_REASON_CANCELLATION
    assert sorted(undo_log(client, tag)) == [f"{tag}-child-release", f"{tag}-parent-unbook"]
