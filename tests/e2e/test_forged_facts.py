"""Issue 13 §4, defence in depth: facts published straight to NATS (a broker without
authorization, so nothing stops the publish) do not move a step unless they answer
the request the execution service made for it — the work id or approval id of that
step's request, from the owning service's ``ce-source``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from google.protobuf.message import Message
from nats.js import JetStreamContext

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.approval.v1 import facts_pb2 as approval_facts
from trinity.process.common.v1 import types_pb2
from trinity.process.execution.v1 import execution_pb2
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity.process.work.v1 import work_service_pb2
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.envelope import build_headers
from trinity_platform.subjects import fact_subject, facts_stream
from trinity_platform.testing.ports import free_port

from .conftest import Client

pytestmark = pytest.mark.e2e

PROCESS = """
name: forged-facts
steps:
  - id: first
    agent_task: {agent: echo, message: "one"}
  - id: second
    agent_task: {agent: echo, message: "two"}
  - id: review
    human_approval: {approvers: [reviewer@example.com]}
    timeout: 1h
"""
RUNNING = execution_pb2.STEP_STATUS_RUNNING
WAITING = execution_pb2.STEP_STATUS_WAITING
COMPLETED = execution_pb2.STEP_STATUS_COMPLETED


@pytest.fixture
def suite(tmp_path: Path, nats_url: str) -> Iterator[LocalSuite]:
    # No executor: the agent steps keep waiting for their work, so only a fact can end them.
    local = LocalSuite(
        data_dir=tmp_path / "data",
        nats_url=nats_url,
        ports={service: free_port() for service in SERVICES},
        executors=0,
    )
    try:
        local.start()
        local.wait_healthy(90)
        yield local
    finally:
        local.stop()


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def publish(
    js: JetStreamContext, service: str, fact: Message, subject_id: str, source: str = ""
) -> int:
    """Publish ``fact`` as ``source`` (default: its owner) and return its stream sequence."""
    name = fact.DESCRIPTOR.name
    message_id = str(uuid.uuid4())
    headers = build_headers(
        message_id,
        fact.DESCRIPTOR.full_name,
        source or f"trinity.process/{service}",
        subject_id,
        datetime.now(UTC),
    )
    ack = await js.publish(fact_subject(service, name), fact.SerializeToString(), headers=headers)
    return int(ack.seq)


async def consumed(js: JetStreamContext, service: str, durable: str, sequence: int) -> bool:
    """The execution service acknowledged every message of the stream up to ``sequence``."""
    info = await js.consumer_info(facts_stream(service), durable)
    return info.ack_floor.stream_seq >= sequence and not info.num_ack_pending


async def wait_consumed(
    api: Client, js: JetStreamContext, service: str, durable: str, sequence: int
) -> None:
    deadline = time.monotonic() + 30
    while not await consumed(js, service, durable, sequence):
        assert time.monotonic() < deadline, api.suite.log_tail("execution")
        await asyncio.sleep(0.05)


def steps(execution: execution_pb2.Execution) -> dict[str, int]:
    return {s.step_id: s.status for s in execution.steps}


def work_completed(work_id: str, execution_id: str, step_id: str) -> work_facts.WorkCompleted:
    fact = work_facts.WorkCompleted(
        work_id=work_id,
        correlation=types_pb2.StepRef(
            execution_id=execution_id, step_id=step_id, iteration=1, attempt=1
        ),
    )
    fact.result.output = f"forged for {step_id}"
    return fact


async def test_forged_work_and_approval_facts_do_not_move_a_step(
    suite: LocalSuite, js: JetStreamContext
) -> None:
    api = Client(suite, {})
    try:
        await api.publish(PROCESS)
        execution_id = await api.trigger("forged-facts")
        await api.wait(
            execution_id,
            lambda e: steps(e) == {"first": RUNNING, "second": RUNNING, "review": WAITING},
        )
        approval = await api.pending_approval(execution_id)

        async def work_by_step() -> dict[str, str]:
            listed = await api.work.ListWork(
                work_service_pb2.ListWorkRequest(execution_id=execution_id)
            )
            return {w.correlation.step_id: w.id for w in listed.work}

        # A step is RUNNING once its decision is written; its work request is sent after
        # (by the dispatcher), so wait for both requests to exist in the work service.
        deadline = time.monotonic() + 30
        while len(work := await work_by_step()) < 2:
            assert time.monotonic() < deadline, api.suite.log_tail("execution")
            await asyncio.sleep(0.05)
        assert set(work) == {"first", "second"}

        # 1. A decision naming an approval id that is not the step's request.
        forged_decision = approval_facts.ApprovalDecided(
            approval_id=str(uuid.uuid4()),
            execution_id=execution_id,
            step_id="review",
            iteration=1,
            decision=approval_pb2.DECISION_APPROVE,
            decided_by="mallory@example.com",
        )
        seq = await publish(js, "approval", forged_decision, forged_decision.approval_id)
        await wait_consumed(api, js, "approval", "execution-approval-facts", seq)
        # 2. The real work id of step `first`, claimed for step `second`.
        seq = await publish(
            js, "work", work_completed(work["first"], execution_id, "second"), work["first"]
        )
        # 3. The right ids, from someone other than the owning service.
        seq = await publish(
            js,
            "work",
            work_completed(work["second"], execution_id, "second"),
            work["second"],
            source="trinity.process/executor",
        )
        await wait_consumed(api, js, "work", "execution-work-facts", seq)
        execution = await api.get(execution_id)
        assert steps(execution) == {"first": RUNNING, "second": RUNNING, "review": WAITING}
        assert "forged for" not in str(execution)

        # The same facts with the ids of the real requests are acted on: the drops above
        # came from the mismatch, not from a consumer that was not listening.
        real_decision = approval_facts.ApprovalDecided()
        real_decision.CopyFrom(forged_decision)
        real_decision.approval_id = approval.id
        await publish(js, "approval", real_decision, approval.id)
        await publish(js, "work", work_completed(work["second"], execution_id, "second"), "x")
        await api.wait(
            execution_id,
            lambda e: steps(e) == {"first": RUNNING, "second": COMPLETED, "review": COMPLETED},
        )
        pending = await api.approvals.GetApproval(
            approval_service_pb2.GetApprovalRequest(approval_id=approval.id)
        )
        assert pending.approval.status == approval_pb2.APPROVAL_STATUS_PENDING
    finally:
        await api.close()


EACH = """
name: forged-items
steps:
  - id: files
    agent_task:
      agent: echo
      message: "file {{ item }}"
      for_each: "{{ ['a', 'b', 'c'] }}"
"""


def item_answer(
    work_id: str, execution_id: str, step_id: str, output: str
) -> work_facts.WorkCompleted:
    fact = work_completed(work_id, execution_id, step_id)
    fact.result.output = output
    return fact


async def test_a_forged_fact_does_not_move_a_for_each_item(
    suite: LocalSuite, js: JetStreamContext
) -> None:
    """Each item's work has its own id: a fact moves only the item whose request that id
    answers, and only from the work service; an id no item's request got moves nothing."""
    api = Client(suite, {})
    try:
        await api.publish(EACH)
        execution_id = await api.trigger("forged-items")

        async def work_by_item() -> dict[str, str]:
            listed = await api.work.ListWork(
                work_service_pb2.ListWorkRequest(execution_id=execution_id)
            )
            return {w.payload.agent_task.message[-1]: w.id for w in listed.work}

        deadline = time.monotonic() + 30
        while len(work := await work_by_item()) < 3:
            assert time.monotonic() < deadline, api.suite.log_tail("execution")
            await asyncio.sleep(0.05)
        assert set(work) == {"a", "b", "c"}

        def items(execution: execution_pb2.Execution) -> tuple[int, int, int]:
            (step,) = execution.steps
            return step.status, step.items_total, step.items_done

        # 1. An id that no item's request was given, claimed for the step.
        seq = await publish(
            js, "work", item_answer(str(uuid.uuid4()), execution_id, "files", "forged"), "x"
        )
        # 2. Item b's real id, from someone other than the work service.
        seq = await publish(
            js,
            "work",
            item_answer(work["b"], execution_id, "files", "forged b"),
            work["b"],
            source="trinity.process/executor",
        )
        # 3. Item b's real id for another step attempt.
        stale = item_answer(work["b"], execution_id, "files", "forged b")
        stale.correlation.attempt = 2
        seq = await publish(js, "work", stale, work["b"])
        await wait_consumed(api, js, "work", "execution-work-facts", seq)
        assert items(await api.get(execution_id)) == (WAITING, 3, 0)

        # Item b's id from the work service answers item b, and only item b.
        seq = await publish(js, "work", item_answer(work["b"], execution_id, "files", "B"), "x")
        await api.wait(execution_id, lambda e: items(e) == (WAITING, 3, 1))
        seq = await publish(js, "work", item_answer(work["b"], execution_id, "files", "B2"), "y")
        await wait_consumed(api, js, "work", "execution-work-facts", seq)
        assert items(await api.get(execution_id)) == (WAITING, 3, 1)  # b has ended already
        for name in ("c", "a"):
            await publish(
                js, "work", item_answer(work[name], execution_id, "files", name.upper()), name
            )
        done = await api.wait(execution_id)
        assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED
        assert done.steps[0].output == '["A","B","C"]'
    finally:
        await api.close()
