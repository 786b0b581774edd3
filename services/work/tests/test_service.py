"""The work service over real gRPC, JetStream and a database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from nats.js import JetStreamContext

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import facts_pb2, intents_pb2, work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform import metrics
from trinity_platform.envelope import Envelope, decode
from trinity_platform.grpc_errors import error_details

Facts = Callable[[], Awaitable[list[Envelope]]]


def agent_request(
    key: str, message: str = "hello", **kwargs: Any
) -> work_service_pb2.RequestWorkRequest:
    return work_service_pb2.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(
            agent_task=work_pb2.AgentTaskPayload(agent="echo", message=message)
        ),
        correlation=types_pb2.StepRef(
            execution_id="exec-1", step_id="research", iteration=1, attempt=1
        ),
        **kwargs,
    )


async def queued_intents(js: JetStreamContext) -> int:
    info = await js.stream_info("TRINITY_PROCESS_WORK_QUEUE")
    return int(info.state.messages)


async def test_request_work_twice_with_one_key_makes_one_request_and_one_intent(
    stub: WorkServiceStub, js: JetStreamContext, facts: Facts, wait_for: Any
) -> None:
    first = await stub.RequestWork(agent_request("exec-1/research/1/1"))
    again = await stub.RequestWork(agent_request("exec-1/research/1/1"))
    assert first.work.id == again.work.id
    assert first.work.status == work_pb2.WORK_STATUS_REQUESTED
    assert first.work.request_id == "exec-1/research/1/1"
    assert first.work.delivery == 1 and first.work.max_deliveries == 3
    assert first.work.timeout.seconds == 600

    listed = await stub.ListWork(work_service_pb2.ListWorkRequest(execution_id="exec-1"))
    assert [w.id for w in listed.work] == [first.work.id]

    await wait_for(lambda: _count(facts, "WorkRequested", 1))
    assert await queued_intents(js) == 1
    [fact] = [e for e in await facts() if e.type.endswith("WorkRequested")]
    assert fact.subject == first.work.id
    assert fact.correlation_id == "exec-1"
    assert fact.nats_subject == "trinity.process.work.facts.v1.WorkRequested"
    requested = decode(fact)
    assert isinstance(requested, facts_pb2.WorkRequested)
    assert requested.payload.agent_task.message == "hello"

    raw = await js.get_last_msg(
        "TRINITY_PROCESS_WORK_QUEUE", "trinity.process.work.queue.v1.agent_task"
    )
    intent = intents_pb2.WorkExecutionRequested.FromString(raw.data or b"")
    assert intent.work_id == first.work.id and intent.delivery == 1
    assert (raw.headers or {})["ce-type"] == "trinity.process.work.v1.WorkExecutionRequested"


def _handled(method: str) -> float:
    """Calls of ``method`` this process's gRPC servers answered so far."""
    return sum(
        sample.value
        for metric in metrics.GRPC_HANDLED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["method"].endswith("/" + method)
    )


async def _count(facts: Facts, name: str, n: int) -> bool:
    return len([e for e in await facts() if e.type.endswith("." + name)]) >= n


async def test_a_reused_key_with_another_request_is_refused(stub: WorkServiceStub) -> None:
    await stub.RequestWork(agent_request("key-1", "one"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWork(agent_request("key-1", "two"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(info.value)[0] == "IDEMPOTENCY_KEY_REUSED"


async def test_executor_happy_path_emits_the_facts_in_order(
    service: Any, stub: WorkServiceStub, start_executor: Any, facts: Facts, wait_for: Any
) -> None:
    await start_executor(service)
    starts = _handled("RecordWorkStarted")
    reply = await stub.RequestWork(agent_request("exec-1/research/1/1", "the answer"))
    work_id = reply.work.id

    async def completed() -> work_pb2.WorkRequest | None:
        work = (await stub.GetWork(work_service_pb2.GetWorkRequest(work_id=work_id))).work
        return work if work.status == work_pb2.WORK_STATUS_COMPLETED else None

    work = await wait_for(completed)
    assert work.result.output == "the answer"
    assert work.result.cost.currency_code == "USD"
    assert (work.result.cost.units, work.result.cost.nanos) == (0, 0)
    assert work.executor_id == "executor-1"

    await wait_for(lambda: _count(facts, "WorkCompleted", 1))
    mine = [e for e in await facts() if e.subject == work_id]
    assert [e.type.rsplit(".", 1)[1] for e in mine] == [
        "WorkRequested",
        "WorkStarted",
        "WorkCompleted",
    ]
    assert {e.source for e in mine} == {"trinity.process/work"}
    # The echo agent answers within the first heartbeat interval: the executor recorded
    # the start with the result, in one call (both facts above all the same).
    assert _handled("RecordWorkStarted") == starts
    done = decode(mine[-1])
    assert isinstance(done, facts_pb2.WorkCompleted)
    assert done.result.output == "the answer"
    assert done.correlation.step_id == "research"


async def test_echo_cost_uses_the_currency_of_the_task(
    service: Any, stub: WorkServiceStub, start_executor: Any, wait_for: Any
) -> None:
    await start_executor(service)
    request = agent_request("k-eur", '{"verdict": "ok"}')
    request.payload.agent_task.max_cost.CopyFrom(types_pb2.Money(currency_code="EUR", units=1))
    work_id = (await stub.RequestWork(request)).work.id

    async def completed() -> work_pb2.WorkRequest | None:
        work = (await stub.GetWork(work_service_pb2.GetWorkRequest(work_id=work_id))).work
        return work if work.status == work_pb2.WORK_STATUS_COMPLETED else None

    work = await wait_for(completed)
    assert work.result.cost.currency_code == "EUR"
    assert dict(work.result.structured_output) == {"verdict": "ok"}


def _violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    reason, violations = error_details(exc)
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
    assert reason == "INVALID_ARGUMENT"
    return {v.field: v.description for v in violations}


async def test_bad_input_is_invalid_argument_with_field_violations(stub: WorkServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWork(work_service_pb2.RequestWorkRequest())
    assert set(_violations(info.value)) == {"request_id", "payload"}

    bad = agent_request("k", timeout=duration_pb2.Duration(seconds=-5), max_deliveries=1000)
    bad.payload.agent_task.agent = ""
    bad.payload.agent_task.max_cost.CopyFrom(
        types_pb2.Money(currency_code="usd", units=1, nanos=-5)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWork(bad)
    assert set(_violations(info.value)) == {
        "timeout",
        "max_deliveries",
        "payload.agent_task.agent",
        "payload.agent_task.max_cost.currency_code",
        "payload.agent_task.max_cost.nanos",
    }

    zero = await stub.RequestWork(agent_request("zero", timeout=duration_pb2.Duration(seconds=0)))
    assert zero.work.timeout.seconds == 600  # an explicit zero means the default

    tool = work_service_pb2.RequestWorkRequest(
        request_id="t", payload=work_pb2.WorkPayload(tool_run=work_pb2.ToolRunPayload())
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWork(tool)
    assert set(_violations(info.value)) == {"payload.tool_run.action"}

    note = work_service_pb2.RequestWorkRequest(
        request_id="n",
        payload=work_pb2.WorkPayload(notification=work_pb2.NotificationPayload(channel=99)),  # type: ignore[arg-type]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWork(note)
    assert set(_violations(info.value)) == {"payload.notification.channel"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RecordWorkStarted(work_service_pb2.RecordWorkStartedRequest())
    assert set(_violations(info.value)) == {"work_id", "executor_id"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RecordWorkFailed(
            work_service_pb2.RecordWorkFailedRequest(
                work_id="w", executor_id="e", error=types_pb2.Failure(code="not a code")
            )
        )
    assert set(_violations(info.value)) == {"error.code"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RecordWorkCompleted(
            work_service_pb2.RecordWorkCompletedRequest(
                work_id="w",
                executor_id="e",
                result=work_pb2.WorkResult(context_used=-1, evidence=[work_pb2.Evidence(name="x")]),
            )
        )
    assert set(_violations(info.value)) == {"result.context_used", "result.evidence[0].kind"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListWork(work_service_pb2.ListWorkRequest(page_size=-1, page_token="%%%"))
    assert "page_size" in _violations(info.value)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListWork(work_service_pb2.ListWorkRequest(page_token="bm90IGpzb24"))
    assert set(_violations(info.value)) == {"page_token"}

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetWork(work_service_pb2.GetWorkRequest())
    assert set(_violations(info.value)) == {"work_id"}


async def test_unknown_work_is_not_found(stub: WorkServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetWork(work_service_pb2.GetWorkRequest(work_id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(info.value)[0] == "WORK_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RecordWorkStarted(
            work_service_pb2.RecordWorkStartedRequest(work_id="nope", executor_id="e")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_work_filters_and_pages(stub: WorkServiceStub) -> None:
    ids = []
    for i in range(5):
        request = agent_request(f"page/{i}")
        request.correlation.execution_id = "exec-a" if i % 2 == 0 else "exec-b"
        ids.append((await stub.RequestWork(request)).work.id)
    note = work_service_pb2.RequestWorkRequest(
        request_id="note",
        payload=work_pb2.WorkPayload(
            notification=work_pb2.NotificationPayload(channel=1, target="ops", message="hi")  # type: ignore[arg-type]
        ),
    )
    await stub.RequestWork(note)

    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListWork(
            work_service_pb2.ListWorkRequest(
                kind=work_pb2.WORK_KIND_AGENT_TASK, page_size=2, page_token=token
            )
        )
        assert len(page.work) <= 2
        seen += [w.id for w in page.work]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))  # newest first, each once

    first = await stub.ListWork(work_service_pb2.ListWorkRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as info:  # a token only fits its own filter
        await stub.ListWork(
            work_service_pb2.ListWorkRequest(
                execution_id="exec-a", page_token=first.next_page_token
            )
        )
    assert set(_violations(info.value)) == {"page_token"}

    by_execution = await stub.ListWork(work_service_pb2.ListWorkRequest(execution_id="exec-b"))
    assert [w.id for w in by_execution.work] == [ids[3], ids[1]]
    notes = await stub.ListWork(
        work_service_pb2.ListWorkRequest(kind=work_pb2.WORK_KIND_NOTIFICATION)
    )
    assert len(notes.work) == 1
    requested = await stub.ListWork(
        work_service_pb2.ListWorkRequest(status=work_pb2.WORK_STATUS_REQUESTED, page_size=100)
    )
    assert len(requested.work) == 6
    done = await stub.ListWork(
        work_service_pb2.ListWorkRequest(status=work_pb2.WORK_STATUS_COMPLETED)
    )
    assert list(done.work) == []
