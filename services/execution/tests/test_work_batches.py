"""The engine's dispatcher sends work requests and cancels in batches, against the real
work service (gRPC, JetStream, its database: SQLite and PostgreSQL): the due commands of
a kind go in one RequestWorkBatch / CancelWorkBatch call, each item is classified on its
own (done with its work id, refused for good, retried), a call that fails whole is a
transient failure of every item, and a batch refused whole is sent item by item."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_execution.infrastructure.senders import (
    CANCEL_WORK,
    REQUEST_WORK,
    work_batch_senders,
    work_senders,
)
from trinity_execution.infrastructure.tables import dispatches
from trinity_execution.loops.dispatcher import DISPATCHES, execution_dispatcher
from trinity_platform import metrics
from trinity_platform.config import ServiceSettings
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.dispatch import BatchSender, CommandDispatcher, command_state
from trinity_platform.runtime import RuntimeOptions
from trinity_work.bootstrap import WorkOptions, WorkService, bootstrap

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
api = work_service_pb2


@pytest.fixture
def work_database_url(database_url: str, tmp_path: Path, _postgres_databases: Any) -> Iterator[str]:
    """The work service's own database, of the kind of ``database_url`` (the engine's)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path}/work.db"
        return
    database = _postgres_databases.take()
    try:
        yield database.url
    finally:
        _postgres_databases.release(database)


@pytest.fixture
async def work(work_database_url: str, nats_url: str, tmp_path: Path) -> AsyncIterator[WorkService]:
    service = bootstrap(
        ServiceSettings(
            service="work",
            nats_url=nats_url,
            data_dir=tmp_path / "work-data",
            database_url=work_database_url,
            listen="127.0.0.1:0",
        ),
        WorkOptions(lease_check_interval=1.0),
        RuntimeOptions(stop_grace=0.5, configure_logging=False),
    )
    await service.runtime.start()
    yield service
    await service.runtime.stop()


@pytest.fixture
async def channel(work: WorkService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{work.runtime.port}") as opened:
        yield opened


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


Rejections = list[tuple[str, str, str]]


def dispatcher(
    engine: AsyncEngine,
    channel: grpc.aio.Channel,
    rejected: Rejections,
    batches: dict[str, BatchSender] | None = None,
) -> CommandDispatcher:
    def lookup(key: str) -> Any:
        return command_state(engine, DISPATCHES, key)

    async def on_rejected(execution_id: str, key: str, code: str, message: str) -> None:
        rejected.append((key, code, message))

    return execution_dispatcher(
        engine,
        work_senders(channel, lookup),
        on_rejected,
        work_batch_senders(channel, lookup) if batches is None else batches,
    )


def agent_request(key: str, message: str = "hello") -> api.RequestWorkRequest:
    return api.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(
            agent_task=work_pb2.AgentTaskPayload(agent="echo", message=message)
        ),
        correlation=types_pb2.StepRef(execution_id="exec-1", step_id=key, iteration=1, attempt=1),
    )


def row(key: str, kind: str, payload: bytes, target_key: str | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "key": key,
        "execution_id": "exec-1",
        "kind": kind,
        "payload": payload,
        "status": "pending",
        "next_attempt_at": now - timedelta(seconds=1),
        "created_at": now,
        "target_key": target_key,
    }


async def add(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(dispatches), rows)


async def rows_by_key(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        found = (await conn.execute(select(dispatches).order_by(dispatches.c.id))).all()
    return {r.key: r for r in found}


def handled(method: str) -> float:
    """Calls of ``method`` the in-process work service answered so far."""
    return sum(
        sample.value
        for metric in metrics.GRPC_HANDLED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["method"].endswith("/" + method)
    )


async def test_due_work_requests_go_in_batches_each_answered_on_its_own(
    engine: AsyncEngine, channel: grpc.aio.Channel
) -> None:
    stub = WorkServiceStub(channel)
    taken = await stub.RequestWork(agent_request("reused", "first content"))
    good = [
        row(f"good-{i}", REQUEST_WORK, agent_request(f"good-{i}").SerializeToString())
        for i in range(146)
    ]
    hostile = [
        # no payload: the work service's own validation
        row(
            "no-payload", REQUEST_WORK, api.RequestWorkRequest(request_id="np").SerializeToString()
        ),
        # NUL in text: the request checks, per item
        row("nul", REQUEST_WORK, agent_request("nul", "a\x00b").SerializeToString()),
        # the key of other work with other content
        row("reused", REQUEST_WORK, agent_request("reused", "other").SerializeToString()),
        # the same request twice (two dispatch rows, one idempotency key): one work
        row("twice-a", REQUEST_WORK, agent_request("twice").SerializeToString()),
    ]
    twice_b = row("twice-b", REQUEST_WORK, agent_request("twice").SerializeToString())
    await add(engine, [*good[:70], *hostile, *good[70:], twice_b])
    rejected: Rejections = []
    batches, singles = handled("RequestWorkBatch"), handled("RequestWork")

    sender = dispatcher(engine, channel, rejected)
    assert await sender.dispatch_once() == 151

    assert handled("RequestWorkBatch") - batches == 2  # 100 + 51 items
    assert handled("RequestWork") - singles == 0
    rows = await rows_by_key(engine)
    for item in good:
        done = rows[item["key"]]
        assert (done.status, done.attempts) == ("done", 1)
        work = (await stub.GetWork(api.GetWorkRequest(work_id=done.result_id))).work
        assert work.request_id == item["key"]
    assert len({rows[item["key"]].result_id for item in good}) == len(good)
    assert rows["twice-a"].status == rows["twice-b"].status == "done"
    assert rows["twice-a"].result_id == rows["twice-b"].result_id
    assert {key: code for key, code, _ in rejected} == {
        "no-payload": "INVALID_ARGUMENT",
        "nul": "INVALID_ARGUMENT",
        "reused": "FAILED_PRECONDITION",
    }
    for key in ("no-payload", "nul", "reused"):
        assert rows[key].status == "rejected" and rows[key].result_id is None
    listed = await stub.ListWork(api.ListWorkRequest(execution_id="exec-1", page_size=1000))
    assert {w.request_id for w in listed.work} == {
        *(item["key"] for item in good),
        "twice",
        "reused",
    }
    assert next(w for w in listed.work if w.request_id == "reused").id == taken.work.id


async def test_a_lone_command_goes_by_the_single_rpc(
    engine: AsyncEngine, channel: grpc.aio.Channel
) -> None:
    await add(engine, [row("alone", REQUEST_WORK, agent_request("alone").SerializeToString())])
    batches, singles = handled("RequestWorkBatch"), handled("RequestWork")
    assert await dispatcher(engine, channel, []).dispatch_once() == 1
    assert (handled("RequestWorkBatch") - batches, handled("RequestWork") - singles) == (0, 1)
    assert (await rows_by_key(engine))["alone"].status == "done"


async def test_a_call_that_fails_whole_is_retried_for_every_item(
    engine: AsyncEngine, channel: grpc.aio.Channel
) -> None:
    await add(
        engine,
        [
            row(f"k-{i}", REQUEST_WORK, agent_request(f"k-{i}").SerializeToString())
            for i in range(5)
        ],
    )
    rejected: Rejections = []
    # A port held bound but not listening: connections are refused, and no other
    # process can take it meanwhile.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as nowhere:
            assert await dispatcher(engine, nowhere, rejected).dispatch_once() == 5
    rows = await rows_by_key(engine)
    assert not rejected
    for key in (f"k-{i}" for i in range(5)):
        assert (rows[key].status, rows[key].attempts) == ("pending", 1)
        assert rows[key].last_error.startswith("UNAVAILABLE")
    # Due again (the back-off over): the live service takes them, once each.
    async with engine.begin() as conn:
        await conn.execute(
            update(dispatches).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await dispatcher(engine, channel, rejected).dispatch_once() == 5
    rows = await rows_by_key(engine)
    assert [(r.status, r.attempts) for r in rows.values()] == [("done", 2)] * 5


async def test_a_batch_refused_whole_is_sent_item_by_item(
    engine: AsyncEngine, channel: grpc.aio.Channel
) -> None:
    """A receiver may refuse a batch whole (an older one without the batch RPC, a bound it
    checks per call): no item is refused for that, each goes alone."""
    await add(
        engine,
        [
            row(f"k-{i}", REQUEST_WORK, agent_request(f"k-{i}").SerializeToString())
            for i in range(120)
        ],
    )
    real = work_batch_senders(channel, lambda key: command_state(engine, DISPATCHES, key))
    too_big = {REQUEST_WORK: BatchSender(real[REQUEST_WORK].send, max_items=150)}
    rejected: Rejections = []
    batches, singles = handled("RequestWorkBatch"), handled("RequestWork")
    assert await dispatcher(engine, channel, rejected, too_big).dispatch_once() == 120
    assert (handled("RequestWorkBatch") - batches, handled("RequestWork") - singles) == (1, 120)
    assert not rejected
    assert {r.status for r in (await rows_by_key(engine)).values()} == {"done"}


async def test_cancels_go_in_one_batch_each_waiting_for_its_target(
    engine: AsyncEngine, channel: grpc.aio.Channel
) -> None:
    stub = WorkServiceStub(channel)
    await add(
        engine,
        [
            row(f"w-{i}", REQUEST_WORK, agent_request(f"w-{i}").SerializeToString())
            for i in range(3)
        ],
    )
    rejected: Rejections = []
    assert await dispatcher(engine, channel, rejected).dispatch_once() == 3

    def cancel(key: str) -> bytes:
        return api.CancelWorkRequest(request_id=key, reason="stop").SerializeToString()

    await add(
        engine,
        [
            row("c-0", CANCEL_WORK, cancel("c-0"), target_key="w-0"),
            row("c-1", CANCEL_WORK, cancel("c-1"), target_key="w-1"),
            # its target not accepted yet: waits
            row("c-later", CANCEL_WORK, cancel("c-later"), target_key="not-yet"),
            # its target never existed: nothing to cancel
            row("c-none", CANCEL_WORK, cancel("c-none"), target_key="no-such-command"),
        ],
    )
    await add(engine, [row("not-yet", "request_approval", b"", None)])
    async with engine.begin() as conn:  # the approval request is not due: it stays pending
        await conn.execute(
            update(dispatches)
            .where(dispatches.c.key == "not-yet")
            .values(next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
        )
    batches, singles = handled("CancelWorkBatch"), handled("CancelWork")
    assert await dispatcher(engine, channel, rejected).dispatch_once() == 4
    assert (handled("CancelWorkBatch") - batches, handled("CancelWork") - singles) == (1, 0)
    rows = await rows_by_key(engine)
    for key, target in (("c-0", "w-0"), ("c-1", "w-1")):
        assert (rows[key].status, rows[key].result_id) == ("done", rows[target].result_id)
        work = (await stub.GetWork(api.GetWorkRequest(work_id=rows[target].result_id))).work
        assert work.status == work_pb2.WORK_STATUS_CANCELLED
    assert (rows["c-none"].status, rows["c-none"].result_id) == ("done", None)
    assert (rows["c-later"].status, rows["c-later"].attempts) == ("pending", 1)
    assert "not accepted yet" in rows["c-later"].last_error
    untouched = (await stub.GetWork(api.GetWorkRequest(work_id=rows["w-2"].result_id))).work
    assert untouched.status == work_pb2.WORK_STATUS_REQUESTED
    assert not rejected
