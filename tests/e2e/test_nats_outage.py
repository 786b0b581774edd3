"""NATS goes down while executions are triggered and comes back: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest

from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub

pytestmark = pytest.mark.e2e

EXECUTIONS = 5


@pytest.mark.parametrize("suite_database", ["sqlite"], indirect=True)
async def test_facts_survive_a_nats_outage_exactly_once(
    make_suite, nats_server, stream_reader
) -> None:  # type: ignore[no-untyped-def]
    suite = make_suite()
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['definition']}") as definition_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['execution']}") as execution_channel,
    ):
        definitions = DefinitionServiceStub(definition_channel)
        spec = definition_pb2.ProcessSpec(
            name="outage",
            steps=[
                definition_pb2.Step(
                    id="first", agent_task=definition_pb2.AgentTask(agent="echo", message="one")
                ),
                definition_pb2.Step(
                    id="second",
                    depends_on=["first"],
                    agent_task=definition_pb2.AgentTask(agent="echo", message="two"),
                ),
            ],
        )
        draft = await definitions.CreateDraft(
            definition_service_pb2.CreateDraftRequest(request_id="d", spec=spec)
        )
        await definitions.PublishDefinition(
            definition_service_pb2.PublishDefinitionRequest(
                request_id="p", definition_id=draft.definition.id
            )
        )
        executions = ExecutionServiceStub(execution_channel)

        await asyncio.to_thread(nats_server.stop)
        ids = []
        for index in range(EXECUTIONS):
            reply = await executions.TriggerProcess(
                execution_service_pb2.TriggerProcessRequest(
                    request_id=f"t{index}", process_name="outage"
                )
            )
            ids.append(reply.execution.id)
        await asyncio.sleep(1.0)  # commands commit while their facts wait in the outboxes
        await asyncio.to_thread(nats_server.start)

        deadline = time.monotonic() + 60
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            for execution_id in list(pending):
                reply = await executions.GetExecution(
                    execution_service_pb2.GetExecutionRequest(execution_id=execution_id)
                )
                if reply.execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED:
                    pending.discard(execution_id)
            await asyncio.sleep(0.1)
        assert not pending, suite.log_tail("execution")

    expected = {
        "TRINITY_PROCESS_EXECUTION_FACTS": EXECUTIONS
        * 6,  # started, 2 x (step started, completed), completed
        "TRINITY_PROCESS_WORK_FACTS": EXECUTIONS * 6,  # 2 x (requested, started, completed)
    }
    for stream, count in expected.items():
        deadline = time.monotonic() + 15
        envelopes = await stream_reader(stream)
        while len(envelopes) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            envelopes = await stream_reader(stream)
        ids_seen = Counter(e.id for e in envelopes)
        assert len(envelopes) == count, (stream, [e.type for e in envelopes])
        assert max(ids_seen.values()) == 1
    execution_facts = await stream_reader("TRINITY_PROCESS_EXECUTION_FACTS")
    for execution_id in ids:
        own = [e.type.rsplit(".", 1)[1] for e in execution_facts if e.subject == execution_id]
        assert own == [
            "ProcessStarted",
            "StepStarted",
            "StepCompleted",
            "StepStarted",
            "StepCompleted",
            "ProcessCompleted",
        ]
