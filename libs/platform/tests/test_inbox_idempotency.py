"""Inbox dedupe and idempotent commands on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from google.rpc.error_details_pb2 import RequestInfo
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.db import INBOX
from trinity_platform.errors import FailedPrecondition, InvalidArgument
from trinity_platform.idempotency import (
    MAX_KEY_LENGTH,
    lookup,
    prune_idempotency,
    remember,
)
from trinity_platform.inbox import claim_message, prune_inbox
from trinity_platform.unit_of_work import fingerprint


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
    a = fingerprint(RequestInfo(request_id="k1", serving_data="x"))
    assert a == fingerprint(RequestInfo(request_id="k2", serving_data="x"))
    assert a != fingerprint(RequestInfo(request_id="k1", serving_data="y"))
    assert a != fingerprint(RequestInfo(request_id="k1", serving_data="x"), without=())
    assert len(a) == 64


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
