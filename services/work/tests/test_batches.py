"""RequestWorkBatch and CancelWorkBatch over real gRPC, JetStream and a database (SQLite
and PostgreSQL): each item answered as the single RPC answers it, in order, one bad item
failing only itself, the good items written together."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import status_pb2
from sqlalchemy import event

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform.authz import Identity
from trinity_platform.batches import MAX_BATCH_ITEMS, status_code
from trinity_platform.channels import open_channel
from trinity_platform.grpc_errors import error_details, status_details

api = work_service_pb2


def agent_request(key: str, message: str = "hello", **kwargs: Any) -> api.RequestWorkRequest:
    return api.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(
            agent_task=work_pb2.AgentTaskPayload(agent="echo", message=message)
        ),
        correlation=types_pb2.StepRef(
            execution_id="exec-1", step_id="research", iteration=1, attempt=1
        ),
        **kwargs,
    )


async def queued_intents(js: Any) -> int:
    return int((await js.stream_info("TRINITY_PROCESS_WORK_QUEUE")).state.messages)


async def requested_facts(facts: Any, n: int) -> bool:
    return len([e for e in await facts() if e.type.endswith(".WorkRequested")]) >= n


def batch(*requests: api.RequestWorkRequest) -> api.RequestWorkBatchRequest:
    return api.RequestWorkBatchRequest(
        items=[api.RequestWorkBatchItem(request=r) for r in requests]
    )


def item_status(result: Any) -> status_pb2.Status:
    assert result.WhichOneof("outcome") == "error", result
    return status_pb2.Status.FromString(result.error.SerializeToString())


def reason_and_fields(status: status_pb2.Status) -> tuple[str, list[str]]:
    reason, violations = status_details(status)
    return reason or "", [v.field for v in violations]


@pytest.fixture
def work_transactions(service: Any) -> Iterator[set[int]]:
    """The transactions that inserted work requests (one number per transaction)."""
    engine = service.runtime.engine.sync_engine
    seen: set[int] = set()
    counter = iter(range(1, 1 << 30))

    def begin(conn: Any) -> None:
        conn.info["transaction"] = next(counter)

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO WORK_REQUESTS"):
            seen.add(conn.info.get("transaction", 0))

    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", before)
    yield seen
    event.remove(engine, "before_cursor_execute", before)
    event.remove(engine, "begin", begin)


async def test_a_batch_requests_every_item_in_order_in_one_transaction(
    stub: WorkServiceStub, js: Any, facts: Any, wait_for: Any, work_transactions: set[int]
) -> None:
    keys = [f"exec-1/step-{i}/1/1" for i in range(20)]
    reply = await stub.RequestWorkBatch(batch(*(agent_request(k, k) for k in keys)))
    assert [r.WhichOneof("outcome") for r in reply.results] == ["work"] * 20
    assert [r.work.request_id for r in reply.results] == keys
    assert [r.work.payload.agent_task.message for r in reply.results] == keys
    assert len({r.work.id for r in reply.results}) == 20
    assert len(work_transactions) == 1  # the items share the unit of work's transaction
    await wait_for(lambda: requested_facts(facts, 20))
    assert await queued_intents(js) == 20
    # A single call with an item's key is a retry of it: the same work, nothing new.
    again = await stub.RequestWork(agent_request(keys[3], keys[3]))
    assert again.work.id == reply.results[3].work.id
    listed = await stub.ListWork(api.ListWorkRequest(execution_id="exec-1", page_size=100))
    assert len(listed.work) == 20


async def test_an_oversized_or_empty_batch_is_refused_whole(stub: WorkServiceStub) -> None:
    too_many = batch(*(agent_request(f"k-{i}") for i in range(MAX_BATCH_ITEMS + 1)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWorkBatch(too_many)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(info.value)
    assert reason == "BATCH_TOO_LARGE" and [v.field for v in violations] == ["items"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWorkBatch(api.RequestWorkBatchRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CancelWorkBatch(
            api.CancelWorkBatchRequest(
                items=[
                    api.CancelWorkBatchItem(request=api.CancelWorkRequest(work_id=f"w-{i}"))
                    for i in range(MAX_BATCH_ITEMS + 1)
                ]
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing of the refused batch was written.
    listed = await stub.ListWork(api.ListWorkRequest(execution_id="exec-1"))
    assert list(listed.work) == []


async def test_bad_items_get_their_own_status_and_the_good_ones_are_written(
    stub: WorkServiceStub, wait_for: Any, facts: Any
) -> None:
    no_key = agent_request("")
    no_payload = api.RequestWorkRequest(request_id="no-payload")
    nul = agent_request("nul", "a\x00b")  # what the request checks refuse in a single call
    negative = agent_request("negative", timeout=duration_pb2.Duration(seconds=-5))
    reply = await stub.RequestWorkBatch(
        batch(agent_request("good-1"), no_key, no_payload, nul, negative, agent_request("good-2"))
    )
    outcomes = [r.WhichOneof("outcome") for r in reply.results]
    assert outcomes == ["work", "error", "error", "error", "error", "work"]
    expected = {1: ["request_id"], 2: ["payload"], 3: ["payload.agent_task.message"]}
    expected[4] = ["timeout"]
    for index, fields in expected.items():
        status = item_status(reply.results[index])
        assert status_code(status) == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_and_fields(status)[1] == fields, index
    # The same item alone is answered the same way.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RequestWork(nul)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error_details(info.value)[1]] == ["payload.agent_task.message"]
    await wait_for(lambda: requested_facts(facts, 2))
    listed = await stub.ListWork(api.ListWorkRequest(execution_id="exec-1"))
    assert sorted(w.request_id for w in listed.work) == ["good-1", "good-2"]


async def test_a_reused_key_in_a_batch_is_refused_and_a_retry_replays(
    stub: WorkServiceStub,
) -> None:
    first = await stub.RequestWork(agent_request("key-1", "one"))
    reply = await stub.RequestWorkBatch(
        batch(agent_request("key-1", "two"), agent_request("key-1", "one"), agent_request("key-2"))
    )
    reused = item_status(reply.results[0])
    assert status_code(reused) == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_and_fields(reused)[0] == "IDEMPOTENCY_KEY_REUSED"
    assert reply.results[1].work.id == first.work.id  # the retry answers the first work
    assert reply.results[2].work.request_id == "key-2"
    # The whole batch again: the same answers, nothing new written.
    again = await stub.RequestWorkBatch(
        batch(agent_request("key-1", "two"), agent_request("key-1", "one"), agent_request("key-2"))
    )
    assert item_status(again.results[0]).code == reused.code
    assert [r.work.id for r in again.results[1:]] == [r.work.id for r in reply.results[1:]]
    listed = await stub.ListWork(api.ListWorkRequest(execution_id="exec-1"))
    assert len(listed.work) == 2


async def test_two_items_with_one_key_in_a_batch(stub: WorkServiceStub) -> None:
    reply = await stub.RequestWorkBatch(
        batch(
            agent_request("same", "x"),
            agent_request("same", "x"),  # the same request twice: one work, answered twice
            agent_request("same", "y"),  # the key with other content: refused
            agent_request("other"),
        )
    )
    first, twice, other_content, other = reply.results
    assert first.work.id and twice.work.id == first.work.id
    status = item_status(other_content)
    assert status_code(status) == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_and_fields(status)[0] == "IDEMPOTENCY_KEY_REUSED"
    assert other.work.request_id == "other"
    listed = await stub.ListWork(api.ListWorkRequest(execution_id="exec-1"))
    assert sorted(w.request_id for w in listed.work) == ["other", "same"]


async def test_cancel_batch_answers_each_item(stub: WorkServiceStub) -> None:
    requested = await stub.RequestWorkBatch(batch(agent_request("c-1"), agent_request("c-2")))
    ids = [r.work.id for r in requested.results]

    def cancel(work_id: str, key: str) -> api.CancelWorkBatchItem:
        return api.CancelWorkBatchItem(
            request=api.CancelWorkRequest(request_id=key, work_id=work_id, reason="stop")
        )

    reply = await stub.CancelWorkBatch(
        api.CancelWorkBatchRequest(
            items=[
                cancel(ids[0], "x-1"),
                cancel("no-such-work", "x-2"),
                cancel("", "x-3"),
                cancel(ids[1], "x-4"),
            ]
        )
    )
    assert reply.results[0].work.status == work_pb2.WORK_STATUS_CANCELLED
    assert status_code(item_status(reply.results[1])) == grpc.StatusCode.NOT_FOUND
    missing = item_status(reply.results[2])
    assert status_code(missing) == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_and_fields(missing)[1] == ["work_id"]
    assert reply.results[3].work.status == work_pb2.WORK_STATUS_CANCELLED


async def test_a_batch_needs_the_permission_of_the_single_rpc(start_service: Any) -> None:
    service = await start_service(
        auth_tokens={
            "exec-token": Identity("executor:one", frozenset({"executor"})),
            "viewer-token": Identity("viewer@example.com", frozenset({"viewer"})),
            "svc-token": Identity("service:execution", frozenset({"service"})),
        }
    )
    target = f"127.0.0.1:{service.runtime.port}"
    for token in ("exec-token", "viewer-token"):
        async with open_channel(target, token=token) as channel:
            stub = WorkServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RequestWorkBatch(batch(agent_request("denied")))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CancelWorkBatch(
                    api.CancelWorkBatchRequest(
                        items=[api.CancelWorkBatchItem(request=api.CancelWorkRequest(work_id="w"))]
                    )
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with open_channel(target, token="svc-token") as channel:
        reply = await WorkServiceStub(channel).RequestWorkBatch(batch(agent_request("allowed")))
        assert reply.results[0].work.request_id == "allowed"
