"""Inbox dedupe and idempotent commands on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc.error_details_pb2 import RequestInfo
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform.db import INBOX, OUTBOX
from trinity_platform.errors import FailedPrecondition, InvalidArgument, NotFound
from trinity_platform.idempotency import (
    MAX_KEY_LENGTH,
    lookup,
    prune_idempotency,
    remember,
    request_fingerprint,
    run_idempotent,
)
from trinity_platform.inbox import claim_message, prune_inbox
from trinity_platform.outbox import add_to_outbox


async def count(engine: AsyncEngine, table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


# ------------------------------------------------------------------ inbox


async def test_claim_once_per_consumer(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await claim_message(conn, "c1", "m1") is True
    async with engine.begin() as conn:
        assert await claim_message(conn, "c1", "m1") is False
        assert await claim_message(conn, "c2", "m1") is True  # another consumer
        assert await claim_message(conn, "c1", "m2") is True


async def test_a_rolled_back_claim_is_forgotten(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            assert await claim_message(conn, "c", "m")
            raise RuntimeError("the effect failed")
    async with engine.begin() as conn:
        assert await claim_message(conn, "c", "m") is True


async def test_concurrent_claims_of_one_message_yield_one_winner(engine: AsyncEngine) -> None:
    async def attempt() -> bool:
        async with engine.begin() as conn:
            won = await claim_message(conn, "c", "same")
            await asyncio.sleep(0.05)  # the effect, while the other claim waits
            return won

    results = await asyncio.gather(*(attempt() for _ in range(4)))
    assert sorted(results) == [False, False, False, True]


async def test_inbox_prune(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await claim_message(conn, "c", "old")
    assert await prune_inbox(engine, timedelta(hours=1)) == 0
    assert await prune_inbox(engine, timedelta(seconds=-1)) == 1
    assert await count(engine, INBOX) == 0


# ------------------------------------------------------------------ idempotency


def test_fingerprint_ignores_the_key_and_sees_the_rest() -> None:
    a = request_fingerprint(RequestInfo(request_id="k1", serving_data="x"))
    assert a == request_fingerprint(RequestInfo(request_id="k2", serving_data="x"))
    assert a != request_fingerprint(RequestInfo(request_id="k1", serving_data="y"))
    assert a != request_fingerprint(RequestInfo(request_id="k1", serving_data="x"), key_field="")
    assert len(a) == 64


class Work:
    """A command handler: one outbox row (its effect) and a numbered response."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail

    async def __call__(self, conn: AsyncConnection) -> StringValue:
        self.calls += 1
        call = self.calls
        if self.fail is not None:
            raise self.fail
        await add_to_outbox(
            conn, message=StringValue(value="done"), subject="s.x", aggregate_id="agg"
        )
        await asyncio.sleep(self.delay)
        return StringValue(value=f"response-{call}")


async def test_same_key_same_request_returns_the_first_response(engine: AsyncEngine) -> None:
    work = Work()
    request = RequestInfo(request_id="key-1", serving_data="payload")
    notified = []
    first = await run_idempotent(
        engine,
        "svc.Do",
        "key-1",
        request,
        work,
        StringValue,
        after_commit=lambda: notified.append(1),
    )
    again = await run_idempotent(engine, "svc.Do", "key-1", request, work, StringValue)
    assert first == again == StringValue(value="response-1")
    assert work.calls == 1
    assert notified == [1]
    assert await count(engine, OUTBOX) == 1
    other_scope = await run_idempotent(engine, "svc.Other", "key-1", request, work, StringValue)
    assert other_scope.value == "response-2"


async def test_same_key_different_request_is_refused(engine: AsyncEngine) -> None:
    work = Work()
    await run_idempotent(
        engine, "svc.Do", "k", RequestInfo(request_id="k", serving_data="a"), work, StringValue
    )
    with pytest.raises(FailedPrecondition) as caught:
        await run_idempotent(
            engine, "svc.Do", "k", RequestInfo(request_id="k", serving_data="b"), work, StringValue
        )
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert work.calls == 1


async def test_empty_key_is_not_idempotent(engine: AsyncEngine) -> None:
    work = Work()
    request = RequestInfo(serving_data="x")
    await run_idempotent(engine, "svc.Do", "", request, work, StringValue)
    await run_idempotent(engine, "svc.Do", "", request, work, StringValue)
    assert work.calls == 2
    assert await count(engine, OUTBOX) == 2


async def test_failures_are_not_remembered(engine: AsyncEngine) -> None:
    request = RequestInfo(request_id="k", serving_data="x")
    with pytest.raises(NotFound):
        await run_idempotent(engine, "s", "k", request, Work(fail=NotFound("no")), StringValue)
    result = await run_idempotent(engine, "s", "k", request, Work(), StringValue)
    assert result.value == "response-1"


async def test_concurrent_first_requests_with_one_key_have_one_effect(
    engine: AsyncEngine,
) -> None:
    work = Work(delay=0.05)
    request = RequestInfo(request_id="race", serving_data="x")
    results = await asyncio.gather(
        *(run_idempotent(engine, "svc.Do", "race", request, work, StringValue) for _ in range(5))
    )
    assert len({r.value for r in results}) == 1
    assert await count(engine, OUTBOX) == 1  # the losers' effects were rolled back


async def test_lookup_and_remember_parts(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await lookup(conn, "s", "k", "fp") is None
        await remember(conn, "s", "k", "fp", b"response")
    async with engine.begin() as conn:
        assert await lookup(conn, "s", "k", "fp") == b"response"
        with pytest.raises(FailedPrecondition):
            await lookup(conn, "s", "k", "other")
    assert await prune_idempotency(engine, timedelta(seconds=-1)) == 1


async def test_an_idempotency_key_longer_than_its_column_is_invalid(engine: AsyncEngine) -> None:
    """PostgreSQL refused a 400-character request_id deep in the transaction (INTERNAL)."""
    async with engine.begin() as conn:
        with pytest.raises(InvalidArgument) as caught:
            await lookup(conn, "scope", "k" * (MAX_KEY_LENGTH + 1), "f")
    assert [v.field for v in caught.value.violations] == ["request_id"]
