"""Leases, heartbeats, expiry and re-offer, cancellation, concurrency and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from nats.js import JetStreamContext

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import facts_pb2, work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform.envelope import Envelope, decode
from trinity_platform.grpc_errors import error_details

Facts = Callable[[], Awaitable[list[Envelope]]]
api = work_service_pb2


def task(
    key: str, agent: str = "echo", message: str = "hi", **kwargs: Any
) -> api.RequestWorkRequest:
    return api.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(
            agent_task=work_pb2.AgentTaskPayload(agent=agent, message=message)
        ),
        correlation=types_pb2.StepRef(execution_id="exec-9", step_id="s", iteration=1, attempt=1),
        **kwargs,
    )


def lease(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


async def get(stub: WorkServiceStub, work_id: str) -> work_pb2.WorkRequest:
    return (await stub.GetWork(api.GetWorkRequest(work_id=work_id))).work


def status_is(
    stub: WorkServiceStub, work_id: str, status: int, **fields: Any
) -> Callable[[], Awaitable[Any]]:
    async def check() -> work_pb2.WorkRequest | None:
        work = await get(stub, work_id)
        if work.status == status and all(getattr(work, k) == v for k, v in fields.items()):
            return work
        return None

    return check


def names(envelopes: list[Envelope], work_id: str) -> list[str]:
    return [e.type.rsplit(".", 1)[1] for e in envelopes if e.subject == work_id]


async def reason_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), error_details(info.value)[0]


async def test_lost_leases_are_reoffered_then_timed_out(
    stub: WorkServiceStub, js: JetStreamContext, facts: Facts, wait_for: Any
) -> None:
    work = (await stub.RequestWork(task("lost", max_deliveries=2))).work
    started = await stub.RecordWorkStarted(
        api.RecordWorkStartedRequest(
            request_id="a-start",
            work_id=work.id,
            executor_id="a",
            delivery=1,
            lease_duration=lease(0.3),
        )
    )
    assert started.work.status == work_pb2.WORK_STATUS_STARTED
    assert await reason_of(
        stub.RecordWorkStarted(
            api.RecordWorkStartedRequest(work_id=work.id, executor_id="b", delivery=1)
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "WORK_LEASED_ELSEWHERE")

    # Executor a goes silent: the lease runs out and the work is offered again.
    again = await wait_for(status_is(stub, work.id, work_pb2.WORK_STATUS_REQUESTED, delivery=2))
    assert again.executor_id == ""

    async def queued() -> int:
        return int((await js.stream_info("TRINITY_PROCESS_WORK_QUEUE")).state.messages)

    await wait_for(lambda: _equals(queued(), 2))  # the first intent and the re-offer

    # a's late answers are refused; the stale delivery cannot be taken any more.
    assert await reason_of(
        stub.RecordWorkCompleted(api.RecordWorkCompletedRequest(work_id=work.id, executor_id="a"))
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "WORK_NOT_LEASED")
    assert await reason_of(
        stub.RecordWorkStarted(
            api.RecordWorkStartedRequest(work_id=work.id, executor_id="b", delivery=1)
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "STALE_DELIVERY")
    # A retry of a's first start (same key) still answers the first outcome: the same work.
    retried = await stub.RecordWorkStarted(
        api.RecordWorkStartedRequest(
            request_id="a-start",
            work_id=work.id,
            executor_id="a",
            delivery=1,
            lease_duration=lease(0.3),
        )
    )
    assert retried.work.id == work.id

    await stub.RecordWorkStarted(
        api.RecordWorkStartedRequest(
            work_id=work.id, executor_id="b", delivery=2, lease_duration=lease(0.3)
        )
    )
    timed_out = await wait_for(status_is(stub, work.id, work_pb2.WORK_STATUS_TIMED_OUT))
    assert timed_out.error.code == "TIMEOUT"
    assert timed_out.end_time.seconds > 0

    await wait_for(lambda: _has(facts, work.id, "WorkFailed"))
    assert names(await facts(), work.id) == [
        "WorkRequested",
        "WorkStarted",
        "WorkStarted",
        "WorkFailed",
    ]
    failed = decode([e for e in await facts() if e.subject == work.id][-1])
    assert isinstance(failed, facts_pb2.WorkFailed) and failed.error.code == "TIMEOUT"


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _has(facts: Facts, work_id: str, name: str) -> bool:
    return name in names(await facts(), work_id)


async def test_a_completion_with_its_start_records_both_in_one_call(
    stub: WorkServiceStub, facts: Facts, wait_for: Any
) -> None:
    work = (await stub.RequestWork(task("at-once"))).work
    result = work_pb2.WorkResult(output="done")

    def completed(work_id: str, delivery: int, key: str = "") -> api.RecordWorkCompletedRequest:
        return api.RecordWorkCompletedRequest(
            request_id=key,
            work_id=work_id,
            executor_id="a",
            result=result,
            start=api.WorkStart(delivery=delivery),
        )

    # Refused as a start would be, and nothing recorded.
    assert await reason_of(stub.RecordWorkCompleted(completed(work.id, 2))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "STALE_DELIVERY",
    )
    assert (await get(stub, work.id)).status == work_pb2.WORK_STATUS_REQUESTED

    done = (await stub.RecordWorkCompleted(completed(work.id, 1, "a-done"))).work
    assert done.status == work_pb2.WORK_STATUS_COMPLETED
    assert (done.executor_id, done.delivery, done.result.output) == ("a", 1, "done")
    assert done.start_time.seconds > 0 and done.end_time.seconds > 0
    retried = (await stub.RecordWorkCompleted(completed(work.id, 1, "a-done"))).work
    assert retried == done  # the same key answers the first outcome

    await wait_for(lambda: _has(facts, work.id, "WorkCompleted"))
    mine = [e for e in await facts() if e.subject == work.id]
    assert names(mine, work.id) == ["WorkRequested", "WorkStarted", "WorkCompleted"]
    started = decode(mine[1])
    assert isinstance(started, facts_pb2.WorkStarted)
    assert (started.executor_id, started.delivery) == ("a", 1)

    leased = (await stub.RequestWork(task("leased"))).work
    await stub.RecordWorkStarted(
        api.RecordWorkStartedRequest(work_id=leased.id, executor_id="b", delivery=1)
    )
    assert await reason_of(stub.RecordWorkCompleted(completed(leased.id, 1))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "WORK_LEASED_ELSEWHERE",
    )
    assert (await get(stub, leased.id)).status == work_pb2.WORK_STATUS_STARTED


async def test_heartbeats_keep_the_lease(stub: WorkServiceStub) -> None:
    work = (await stub.RequestWork(task("beats"))).work
    await stub.RecordWorkStarted(
        api.RecordWorkStartedRequest(
            work_id=work.id, executor_id="a", delivery=1, lease_duration=lease(0.4)
        )
    )
    for _ in range(8):  # 1.2 s, three times the lease
        reply = await stub.HeartbeatWork(
            api.HeartbeatWorkRequest(
                work_id=work.id, executor_id="a", lease_duration=lease(0.4), progress="busy"
            )
        )
        assert not reply.cancel_requested
        assert reply.lease_expire_time.seconds > 0
        await asyncio.sleep(0.15)
    current = await get(stub, work.id)
    assert current.status == work_pb2.WORK_STATUS_STARTED and current.delivery == 1
    assert await reason_of(
        stub.HeartbeatWork(api.HeartbeatWorkRequest(work_id=work.id, executor_id="intruder"))
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "WORK_NOT_LEASED")


def slow_script(tmp_path: Path, delay: str) -> str:
    path = tmp_path / f"slow-{delay}.yaml"
    path.write_text(f"replies:\n  - output: done slowly\n    cost: '0.01'\n    delay: {delay}\n")
    return str(path)


async def test_cancel_stops_the_running_job(
    service: Any,
    stub: WorkServiceStub,
    start_executor: Any,
    facts: Facts,
    wait_for: Any,
    tmp_path: Path,
) -> None:
    executor = await start_executor(
        service,
        {
            "agents": {
                "slow": {"backend": "script", "file": slow_script(tmp_path, "60s")},
                "echo": {"backend": "echo"},
            }
        },
    )
    work = (await stub.RequestWork(task("cancel-me", agent="slow"))).work
    await wait_for(status_is(stub, work.id, work_pb2.WORK_STATUS_STARTED))
    assert work.id in executor.jobs

    cancelled = await stub.CancelWork(
        api.CancelWorkRequest(request_id="c1", work_id=work.id, reason="execution cancelled")
    )
    assert cancelled.work.status == work_pb2.WORK_STATUS_CANCELLED
    assert cancelled.work.cancel_requested and cancelled.work.cancel_reason == "execution cancelled"
    again = await stub.CancelWork(
        api.CancelWorkRequest(request_id="c1", work_id=work.id, reason="execution cancelled")
    )
    assert again.work.status == work_pb2.WORK_STATUS_CANCELLED

    # The executor learns it at its next heartbeat (200 ms) and stops the job.
    await wait_for(lambda: _gone(executor, work.id), timeout=3)
    await wait_for(lambda: _has(facts, work.id, "WorkCancelled"))
    await asyncio.sleep(0.3)
    assert names(await facts(), work.id) == ["WorkRequested", "WorkStarted", "WorkCancelled"]
    assert (await get(stub, work.id)).status == work_pb2.WORK_STATUS_CANCELLED
    assert executor.completed == 0 and executor.failed == 0

    done = (await stub.RequestWork(task("done"))).work
    await wait_for(status_is(stub, done.id, work_pb2.WORK_STATUS_COMPLETED))
    assert await reason_of(stub.CancelWork(api.CancelWorkRequest(work_id=done.id))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "WORK_FINISHED",
    )


async def _gone(executor: Any, work_id: str) -> bool:
    return work_id not in executor.jobs


async def test_the_per_item_timeout_fails_the_work(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    wait_for: Any,
    tmp_path: Path,
) -> None:
    await start_executor(
        sqlite_service,
        {"agents": {"slow": {"backend": "script", "file": slow_script(tmp_path, "30s")}}},
    )
    work = (await sqlite_stub.RequestWork(task("too-slow", agent="slow", timeout=lease(0.5)))).work
    failed = await wait_for(status_is(sqlite_stub, work.id, work_pb2.WORK_STATUS_FAILED), timeout=5)
    assert failed.error.code == "TIMEOUT"
    assert failed.delivery == 1


async def test_concurrency_is_bounded(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    wait_for: Any,
    tmp_path: Path,
) -> None:
    executor = await start_executor(
        sqlite_service,
        {
            "concurrency": 2,
            "agents": {"slow": {"backend": "script", "file": slow_script(tmp_path, "400ms")}},
        },
    )
    ids = [(await sqlite_stub.RequestWork(task(f"c{i}", agent="slow"))).work.id for i in range(5)]
    most = 0

    async def all_done() -> bool:
        nonlocal most
        most = max(most, len(executor.jobs))
        works = [await get(sqlite_stub, i) for i in ids]
        return all(w.status == work_pb2.WORK_STATUS_COMPLETED for w in works)

    await wait_for(all_done, timeout=15, interval=0.02)
    assert most == 2


async def test_graceful_shutdown_finishes_running_jobs(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    wait_for: Any,
    tmp_path: Path,
) -> None:
    executor = await start_executor(
        sqlite_service,
        {
            "shutdown_grace": "5s",
            "agents": {"slow": {"backend": "script", "file": slow_script(tmp_path, "500ms")}},
        },
    )
    work = (await sqlite_stub.RequestWork(task("finish", agent="slow"))).work
    await wait_for(status_is(sqlite_stub, work.id, work_pb2.WORK_STATUS_STARTED))
    await executor.stop()
    done = await get(sqlite_stub, work.id)
    assert done.status == work_pb2.WORK_STATUS_COMPLETED
    assert done.result.output == "done slowly"


async def test_graceful_shutdown_releases_what_it_cannot_finish(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    facts: Facts,
    wait_for: Any,
    tmp_path: Path,
) -> None:
    leaving = await start_executor(
        sqlite_service,
        {
            "shutdown_grace": "200ms",
            "agents": {"slow": {"backend": "script", "file": slow_script(tmp_path, "60s")}},
        },
    )
    work = (await sqlite_stub.RequestWork(task("release", agent="slow", max_deliveries=1))).work
    await wait_for(status_is(sqlite_stub, work.id, work_pb2.WORK_STATUS_STARTED))
    await leaving.stop()
    released = await get(sqlite_stub, work.id)
    assert released.status == work_pb2.WORK_STATUS_REQUESTED and released.delivery == 2

    # Another executor takes it at once; the release did not spend the only delivery.
    await start_executor(sqlite_service, {"agents": {"slow": {"backend": "echo"}}})
    done = await wait_for(status_is(sqlite_stub, work.id, work_pb2.WORK_STATUS_COMPLETED))
    assert done.executor_id == "executor-2" and done.result.output == "hi"
    await wait_for(lambda: _has(facts, work.id, "WorkCompleted"))
    assert names(await facts(), work.id) == [
        "WorkRequested",
        "WorkStarted",
        "WorkStarted",
        "WorkCompleted",
    ]


async def test_executors_share_the_queue_and_each_work_runs_once(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    facts: Facts,
    wait_for: Any,
    tmp_path: Path,
) -> None:
    agents = {"agents": {"slow": {"backend": "script", "file": slow_script(tmp_path, "100ms")}}}
    first = await start_executor(sqlite_service, {**agents, "concurrency": 2})
    second = await start_executor(sqlite_service, {**agents, "concurrency": 2})
    ids = [
        (await sqlite_stub.RequestWork(task(f"share-{i}", agent="slow"))).work.id for i in range(12)
    ]

    async def all_completed() -> list[Envelope] | None:
        completed = [e for e in await facts() if e.type.endswith(".WorkCompleted")]
        return completed if len(completed) >= len(ids) else None

    await wait_for(all_completed, timeout=20)
    await asyncio.sleep(0.3)
    stored = await facts()
    for work_id in ids:
        assert names(stored, work_id) == ["WorkRequested", "WorkStarted", "WorkCompleted"]
    assert first.completed + second.completed == len(ids)
    assert first.completed > 0 and second.completed > 0
