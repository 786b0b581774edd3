"""Crash safety and replicas of the execution service (issue 7).

The process has a durable timer between its agent steps, so the crash also leaves
timers pending and the replicas both poll them: each must fire exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1 import facts_pb2 as execution_facts
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_platform.envelope import decode
from trinity_platform.testing.ports import free_port
from trinity_process_model.authoring import parse_process
from trinity_process_model.proto_codec import spec_to_proto

pytestmark = pytest.mark.e2e

PROCESS = """
name: three-steps
steps:
  - id: one
    agent_task: {agent: worker, message: "one"}
  - id: two
    depends_on: [one]
    agent_task: {agent: worker, message: "two"}
  - id: pause
    depends_on: [two]
    timer: {duration: 300ms}
  - id: three
    depends_on: [pause]
    agent_task: {agent: worker, message: "three"}
"""
STEPS = ("one", "two", "three")  # the agent steps; the timer step runs no work
EXPECTED_FACTS = [
    "ProcessStarted",
    *(["StepStarted", "StepCompleted"] * (len(STEPS) + 1)),
    "ProcessCompleted",
]


def executor_config(tmp_path: Path, delay: str) -> Path:
    (tmp_path / "replies.yaml").write_text(f'replies:\n  - output: "ok"\n    delay: {delay}\n')
    config = tmp_path / "executor.yaml"
    config.write_text("agents:\n  worker:\n    backend: script\n    file: replies.yaml\n")
    return config


async def publish(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = DefinitionServiceStub(channel)
        draft = await stub.CreateDraft(
            definition_service_pb2.CreateDraftRequest(
                request_id="d", spec=spec_to_proto(parse_process(PROCESS))
            )
        )
        await stub.PublishDefinition(
            definition_service_pb2.PublishDefinitionRequest(
                request_id="p", definition_id=draft.definition.id
            )
        )


async def trigger_many(stubs: list[ExecutionServiceStub], count: int) -> list[str]:
    async def one(index: int) -> str:
        reply = await stubs[index % len(stubs)].TriggerProcess(
            execution_service_pb2.TriggerProcessRequest(
                request_id=f"run-{index}", process_name="three-steps"
            )
        )
        return str(reply.execution.id)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def statuses(stub: ExecutionServiceStub, ids: list[str]) -> Counter[int]:
    replies = await asyncio.gather(
        *(stub.GetExecution(execution_service_pb2.GetExecutionRequest(execution_id=i)) for i in ids)
    )
    return Counter(r.execution.status for r in replies)


async def wait_all_completed(stub: ExecutionServiceStub, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = await statuses(stub, ids)
        if seen[execution_pb2.EXECUTION_STATUS_COMPLETED] == len(ids):
            return
        assert time.monotonic() < deadline, f"not all completed: {seen}"
        await asyncio.sleep(0.25)


async def assert_each_step_ran_once(stream_reader, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    execution_facts = await stream_reader("TRINITY_PROCESS_EXECUTION_FACTS")
    assert max(Counter(e.id for e in execution_facts).values()) == 1
    by_execution: dict[str, list[str]] = {}
    for envelope in execution_facts:
        by_execution.setdefault(envelope.subject, []).append(envelope.type.rsplit(".", 1)[1])
    for execution_id in ids:
        assert by_execution.get(execution_id) == EXPECTED_FACTS, execution_id
    requested: Counter[tuple[str, str]] = Counter()
    completed: Counter[tuple[str, str]] = Counter()
    for envelope in await stream_reader("TRINITY_PROCESS_WORK_FACTS"):
        fact = decode(envelope)
        key = (fact.correlation.execution_id, fact.correlation.step_id)  # type: ignore[attr-defined]
        if isinstance(fact, work_facts.WorkRequested):
            requested[key] += 1
        elif isinstance(fact, work_facts.WorkCompleted):
            completed[key] += 1
    expected = {(e, s): 1 for e in ids for s in STEPS}
    assert dict(requested) == expected
    assert dict(completed) == expected


async def test_kill_9_of_the_execution_service_loses_and_doubles_nothing(
    make_suite, stream_reader, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    suite = make_suite(executor_config=executor_config(tmp_path, "150ms"), executors=2)
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)
    await publish(suite.ports["definition"])
    target = f"127.0.0.1:{suite.ports['execution']}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ExecutionServiceStub(channel)
        ids = await trigger_many([stub], 50)
        deadline = time.monotonic() + 180  # generous: the machine may be busy
        while (await statuses(stub, ids))[execution_pb2.EXECUTION_STATUS_COMPLETED] < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    suite.kill("execution")  # SIGKILL in the middle of the run
    suite.start_service("execution")
    await asyncio.to_thread(suite.wait_serving, suite.ports["execution"], "execution")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ExecutionServiceStub(channel)
        before = await statuses(stub, ids)
        assert before[execution_pb2.EXECUTION_STATUS_COMPLETED] < 50, "the crash came too late"
        await wait_all_completed(stub, ids, timeout=120)
    await asyncio.sleep(1.0)  # let the relays publish the last facts
    await assert_each_step_ran_once(stream_reader, ids)


@pytest.mark.parametrize("suite_database", ["postgres"], indirect=True)
async def test_two_execution_replicas_on_postgres_run_100_executions_once(
    make_suite, stream_reader, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    suite = make_suite(executor_config=executor_config(tmp_path, "10ms"), executors=2)
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)
    second_port = free_port()
    name = suite.start_replica("execution", 2, second_port)
    await asyncio.to_thread(suite.wait_serving, second_port, name)
    await publish(suite.ports["definition"])
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['execution']}") as first,
        grpc.aio.insecure_channel(f"127.0.0.1:{second_port}") as second,
    ):
        stubs = [ExecutionServiceStub(first), ExecutionServiceStub(second)]
        ids = await trigger_many(stubs, 100)
        await wait_all_completed(stubs[1], ids, timeout=180)
    await asyncio.sleep(1.0)
    await assert_each_step_ran_once(stream_reader, ids)


PARENT = """
name: calls-child
steps:
  - id: call
    sub_process: {process: child-once, input: {n: "{{ input.n }}"}}
"""
CHILD = """
name: child-once
steps:
  - id: only
    agent_task: {agent: worker, message: "child {{ input.n }}"}
"""


@pytest.mark.parametrize("suite_database", ["sqlite"], indirect=True)
async def test_kill_9_with_child_starts_in_flight_starts_one_child_each(
    make_suite, stream_reader, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The execution service is killed while parents start children; then every child
    start is made to look unfinished (its dispatch pending again, as if the crash came
    between starting the child and recording it), so each is sent again after the
    restart. Every parent still gets exactly one child."""
    suite = make_suite(executor_config=executor_config(tmp_path, "100ms"))
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['definition']}") as channel:
        stub = DefinitionServiceStub(channel)
        for index, text in enumerate((CHILD, PARENT)):
            draft = await stub.CreateDraft(
                definition_service_pb2.CreateDraftRequest(
                    request_id=f"d{index}", spec=spec_to_proto(parse_process(text))
                )
            )
            await stub.PublishDefinition(
                definition_service_pb2.PublishDefinitionRequest(
                    request_id=f"p{index}", definition_id=draft.definition.id
                )
            )
    target = f"127.0.0.1:{suite.ports['execution']}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ExecutionServiceStub(channel)
        ids = []
        for index in range(20):
            request = execution_service_pb2.TriggerProcessRequest(
                request_id=f"parent-{index}", process_name="calls-child"
            )
            request.input.update({"n": index})
            ids.append((await stub.TriggerProcess(request)).execution.id)
        deadline = time.monotonic() + 180
        while (await statuses(stub, ids))[execution_pb2.EXECUTION_STATUS_COMPLETED] < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    suite.kill("execution")
    with sqlite3.connect(suite.data_dir / "execution.db") as db:
        resent = db.execute(
            "UPDATE dispatches SET status = 'pending', next_attempt_at = created_at"
            " WHERE kind = 'start_child_execution' AND status = 'done'"
        ).rowcount
    assert resent >= 3
    suite.start_service("execution")
    await asyncio.to_thread(suite.wait_serving, suite.ports["execution"], "execution")
    async with grpc.aio.insecure_channel(target) as channel:
        await wait_all_completed(ExecutionServiceStub(channel), ids, timeout=120)
    with sqlite3.connect(suite.data_dir / "execution.db") as db:
        sent_again = db.execute(
            "SELECT count(*) FROM dispatches"
            " WHERE kind = 'start_child_execution' AND status = 'done' AND attempts >= 2"
        ).fetchone()[0]
    assert sent_again >= resent  # each start was really sent a second time
    await asyncio.sleep(1.0)  # let the relay publish the last facts
    children: Counter[str] = Counter()
    for envelope in await stream_reader("TRINITY_PROCESS_EXECUTION_FACTS"):
        fact = decode(envelope)
        if isinstance(fact, execution_facts.ProcessStarted) and fact.parent_execution_id:
            children[fact.parent_execution_id] += 1
    assert children == Counter(dict.fromkeys(ids, 1))
