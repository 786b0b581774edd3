"""Transient database failures are retryable answers (UNAVAILABLE / ABORTED with
RetryInfo), never INTERNAL; and one classification says which answers to retry.

Each failure is produced by the real database, not simulated.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform import errors
from trinity_platform.db import create_engine
from trinity_platform.db_errors import classify, transient_database_error
from trinity_platform.grpc_errors import error_details, is_permanent, retry_delay, to_trinity_error
from trinity_platform.grpc_server import ServiceRegistration, build_server
from trinity_platform.interceptors import ErrorMappingInterceptor
from trinity_platform.testing.fixtures import POSTGRES_ENV
from trinity_platform.testing.postgres import ConnectionLimitedDatabase

SERVICE = "trinity.test.Database"


@pytest.fixture
def limited_database() -> AsyncIterator[ConnectionLimitedDatabase]:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL tests skipped")
    database = ConnectionLimitedDatabase(admin_url, limit=2)
    database.create()
    try:
        yield database  # type: ignore[misc]
    finally:
        database.drop()


async def too_many_connections(url: str) -> BaseException:
    """Open one connection more than the role may have; return what the driver raised."""
    engine = create_engine(url, pool_size=5, max_overflow=0)
    held = []
    try:
        for _ in range(3):
            conn = await engine.connect()
            held.append(conn)
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return exc
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()
    raise AssertionError("the connection limit was not enforced")


@pytest.mark.postgres
async def test_too_many_connections_is_unavailable(limited_database) -> None:  # type: ignore[no-untyped-def]
    error = await too_many_connections(limited_database.url)
    assert classify(error) is errors.Unavailable, repr(error)
    translated = transient_database_error(error)
    assert isinstance(translated, errors.Unavailable)
    assert translated.reason == "DATABASE_UNAVAILABLE"
    assert translated.retry_after and translated.retry_after > 0


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    from trinity_platform.testing.ports import free_port

    engine = create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert classify(caught.value) is errors.Unavailable


async def _conflict(engine: AsyncEngine, deadlock: bool) -> BaseException:
    """Two transactions that cannot both commit: a serialization failure or a deadlock."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE race (id int PRIMARY KEY, n int)"))
        await conn.execute(text("INSERT INTO race VALUES (1, 0), (2, 0)"))
    first, second = await engine.connect(), await engine.connect()
    level = "READ COMMITTED" if deadlock else "SERIALIZABLE"
    try:
        for conn in (first, second):
            await conn.execute(text(f"BEGIN ISOLATION LEVEL {level}"))
        if deadlock:
            await first.execute(text("UPDATE race SET n = 1 WHERE id = 1"))
            await second.execute(text("UPDATE race SET n = 2 WHERE id = 2"))
            outcomes = await asyncio.gather(
                first.execute(text("UPDATE race SET n = 1 WHERE id = 2")),
                second.execute(text("UPDATE race SET n = 2 WHERE id = 1")),
                return_exceptions=True,
            )
        else:
            await first.execute(text("SELECT sum(n) FROM race"))
            await second.execute(text("SELECT sum(n) FROM race"))
            await first.execute(text("UPDATE race SET n = 1 WHERE id = 1"))
            await second.execute(text("UPDATE race SET n = 2 WHERE id = 2"))
            outcomes = await asyncio.gather(
                first.execute(text("COMMIT")),
                second.execute(text("COMMIT")),
                return_exceptions=True,
            )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failures) == 1, outcomes
        return failures[0]
    finally:
        for conn in (first, second):
            await conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("deadlock", [False, True], ids=["serialization", "deadlock"])
async def test_serialization_failure_and_deadlock_are_aborted(
    postgres_url: str, deadlock: bool
) -> None:
    engine = create_engine(postgres_url)
    try:
        error = await _conflict(engine, deadlock)
    finally:
        await engine.dispose()
    assert classify(error) is errors.Aborted, repr(error)
    translated = transient_database_error(error)
    assert isinstance(translated, errors.Aborted) and translated.reason == "DATABASE_CONFLICT"


async def test_sqlite_database_is_locked_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x int)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA busy_timeout = 0")
                await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
        holder.close()
    assert classify(caught.value) is errors.Unavailable, repr(caught.value)


async def test_errors_that_are_not_transient_stay_unclassified(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE u (id int PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO u VALUES (1)"))
        with pytest.raises(IntegrityError) as duplicate:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO u VALUES (1)"))
        with pytest.raises(Exception) as syntax:
            async with engine.begin() as conn:
                await conn.execute(text("SELEC nothing"))
    finally:
        await engine.dispose()
    assert classify(duplicate.value) is None
    assert classify(syntax.value) is None
    assert classify(RuntimeError("a bug")) is None
    assert classify(errors.NotFound("an answer")) is None


# ----------------------------------------------------------------- at the gRPC edge


@pytest.fixture
async def raising_server() -> AsyncIterator[Callable[[BaseException], Awaitable[aio.AioRpcError]]]:
    """A server whose only RPC raises the exception it is given; returns the call's error."""
    raised: list[BaseException] = []

    async def handler(request: bytes, context: aio.ServicerContext) -> bytes:
        raise raised[-1]

    generic = grpc.method_handlers_generic_handler(
        SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(handler)}
    )
    registration = ServiceRegistration(
        SERVICE, lambda servicer, server: server.add_generic_rpc_handlers((servicer,)), generic
    )
    handle = build_server("127.0.0.1:0", [registration], [ErrorMappingInterceptor()])
    await handle.start()
    channel = aio.insecure_channel(f"127.0.0.1:{handle.port}")

    async def call(exc: BaseException) -> aio.AioRpcError:
        raised.append(exc)
        with pytest.raises(aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Call")(b"")
        return caught.value

    try:
        yield call
    finally:
        await channel.close()
        await handle.stop(0)


@pytest.mark.postgres
async def test_an_rpc_failing_on_an_exhausted_database_answers_unavailable_with_retry_info(
    limited_database,  # type: ignore[no-untyped-def]
    raising_server,
) -> None:
    rpc_error = await raising_server(await too_many_connections(limited_database.url))
    assert rpc_error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(rpc_error)[0] == "DATABASE_UNAVAILABLE"
    assert retry_delay(rpc_error) == 1.0
    assert "too many" not in (rpc_error.details() or "")  # no driver text leaks out
    rebuilt = to_trinity_error(rpc_error)
    assert isinstance(rebuilt, errors.Unavailable) and rebuilt.retry_after == 1.0
    assert not is_permanent(rpc_error.code())


async def test_a_lost_race_answers_aborted_and_a_bug_stays_internal(raising_server) -> None:  # type: ignore[no-untyped-def]
    conflict = Exception("wrapped")
    conflict.__cause__ = type("SerializationError", (Exception,), {"sqlstate": "40001"})()
    rpc_error = await raising_server(conflict)
    assert rpc_error.code() == grpc.StatusCode.ABORTED
    assert error_details(rpc_error)[0] == "DATABASE_CONFLICT"
    assert retry_delay(rpc_error) == pytest.approx(0.1)
    bug = await raising_server(RuntimeError("a bug"))
    assert bug.code() == grpc.StatusCode.INTERNAL
    assert retry_delay(bug) is None


def test_one_classification_of_permanent_answers() -> None:
    code = grpc.StatusCode
    retryable = {
        code.UNAVAILABLE,
        code.ABORTED,
        code.DEADLINE_EXCEEDED,
        code.RESOURCE_EXHAUSTED,
        code.INTERNAL,  # older servers answered transient database errors so
        code.UNKNOWN,
        code.UNAUTHENTICATED,  # credentials being fixed; the command waits meanwhile
        code.CANCELLED,
    }
    permanent = {
        code.INVALID_ARGUMENT,
        code.NOT_FOUND,
        code.ALREADY_EXISTS,
        code.FAILED_PRECONDITION,
        code.PERMISSION_DENIED,
        code.UNIMPLEMENTED,
        code.OUT_OF_RANGE,
    }
    assert not any(is_permanent(c) for c in retryable)
    assert all(is_permanent(c) for c in permanent)
