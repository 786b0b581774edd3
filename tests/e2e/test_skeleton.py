"""The walking skeleton: one agent step through all four services, every hop real.

definition publishes → TriggerProcess → execution dispatches RequestWork → work
persists it and queues the intent → the executor's echo agent reports started and
completed → execution consumes WorkCompleted → ProcessCompleted.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_platform.envelope import decode

pytestmark = pytest.mark.e2e


def one_step_spec() -> definition_pb2.ProcessSpec:
    return definition_pb2.ProcessSpec(
        name="skeleton",
        description="one echo step",
        steps=[
            definition_pb2.Step(
                id="research",
                name="Research",
                agent_task=definition_pb2.AgentTask(
                    agent="echo", message="Research {{ input.topic }}"
                ),
            )
        ],
    )


async def wait_for_status(
    stub: ExecutionServiceStub, execution_id: str, timeout: float = 30.0
) -> execution_pb2.Execution:
    deadline = time.monotonic() + timeout
    while True:
        reply = await stub.GetExecution(
            execution_service_pb2.GetExecutionRequest(execution_id=execution_id)
        )
        finished = reply.execution.status in (
            execution_pb2.EXECUTION_STATUS_COMPLETED,
            execution_pb2.EXECUTION_STATUS_FAILED,
            execution_pb2.EXECUTION_STATUS_CANCELLED,
        )
        if finished or time.monotonic() > deadline:
            return reply.execution
        await asyncio.sleep(0.05)


async def wait_for_messages(read, stream: str, count: int, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        envelopes = await read(stream)
        if len(envelopes) >= count or time.monotonic() > deadline:
            return envelopes
        await asyncio.sleep(0.05)


async def test_one_agent_step_runs_through_all_four_services(make_suite, stream_reader) -> None:  # type: ignore[no-untyped-def]
    suite = make_suite()
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)

    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['definition']}") as definition_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['execution']}") as execution_channel,
    ):
        definitions = DefinitionServiceStub(definition_channel)
        draft = await definitions.CreateDraft(
            definition_service_pb2.CreateDraftRequest(request_id="draft-1", spec=one_step_spec())
        )
        published = await definitions.PublishDefinition(
            definition_service_pb2.PublishDefinitionRequest(
                request_id="publish-1", definition_id=draft.definition.id
            )
        )
        assert published.definition.version == "1.0"

        executions = ExecutionServiceStub(execution_channel)
        triggered = await executions.TriggerProcess(_trigger_request())
        execution_id = triggered.execution.id
        finished = await wait_for_status(executions, execution_id)

    assert finished.status == execution_pb2.EXECUTION_STATUS_COMPLETED, suite.log_tail("execution")
    (step,) = finished.steps
    assert step.step_id == "research"
    assert step.output == "Research agents"
    assert step.status == execution_pb2.STEP_STATUS_COMPLETED

    definition_facts = await wait_for_messages(stream_reader, "TRINITY_PROCESS_DEFINITION_FACTS", 1)
    execution_facts = await wait_for_messages(stream_reader, "TRINITY_PROCESS_EXECUTION_FACTS", 4)
    work_facts_read = await wait_for_messages(stream_reader, "TRINITY_PROCESS_WORK_FACTS", 3)

    assert [e.type for e in definition_facts] == [
        "trinity.process.definition.v1.DefinitionPublished"
    ]
    assert [e.type for e in execution_facts] == [
        "trinity.process.execution.v1.ProcessStarted",
        "trinity.process.execution.v1.StepStarted",
        "trinity.process.execution.v1.StepCompleted",
        "trinity.process.execution.v1.ProcessCompleted",
    ]
    assert [e.type for e in work_facts_read] == [
        "trinity.process.work.v1.WorkRequested",
        "trinity.process.work.v1.WorkStarted",
        "trinity.process.work.v1.WorkCompleted",
    ]
    # Every execution and work fact is correlated with the execution; the
    # subject of execution facts is the execution itself.
    for envelope in execution_facts:
        assert envelope.subject == execution_id
        assert envelope.correlation_id == execution_id
    for envelope in work_facts_read:
        fact = decode(envelope)
        assert fact.correlation.execution_id == execution_id  # type: ignore[attr-defined]
        assert fact.correlation.step_id == "research"  # type: ignore[attr-defined]
    completed = decode(work_facts_read[-1])
    assert isinstance(completed, work_facts.WorkCompleted)
    assert completed.result.output == "Research agents"
    # The work queue took the intent once and holds nothing afterwards.
    queue = await stream_reader("TRINITY_PROCESS_WORK_QUEUE")
    assert queue == []


def _trigger_request() -> execution_service_pb2.TriggerProcessRequest:
    request = execution_service_pb2.TriggerProcessRequest(
        request_id="trigger-1", process_name="skeleton", triggered_by="e2e"
    )
    request.input.update({"topic": "agents"})
    return request
