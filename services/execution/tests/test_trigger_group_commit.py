"""Concurrent triggers share commits (SQLite and PostgreSQL): the triggers handed in
while a write runs are written together in the next transaction, each answered with
its own execution, a retry of its request id answered with the first execution, and a
request id reused for another request refused alone. Counted, never timed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from trinity_execution import domain as d
from trinity_execution.api.answers import ProtoPresenter
from trinity_execution.application.commands import ExecutionCommands, Trigger
from trinity_execution.application.ports import ExecutionTransaction, PublishedDefinition
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.infrastructure.tables import executions
from trinity_execution.infrastructure.transactions import execution_unit_of_work
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.errors import FailedPrecondition
from trinity_platform.idempotency import KEY_REUSED
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
PUBLISHED = PublishedDefinition(
    id="def-1",
    name="p",
    version="1.0",
    process=d.CompiledProcess.compile(
        "def-1", "1.0", ProcessSpec(name="p", steps=[Step("a", AgentTaskConfig("w", "do a"))])
    ),
)


class PublishedCatalog:
    """The definition service's answer for process ``p`` (the catalog is a port; the
    end-to-end tests drive the real one)."""

    async def by_name(self, name: str, version: str = "") -> PublishedDefinition:
        return PUBLISHED

    async def by_id(self, definition_id: str) -> PublishedDefinition:
        return PUBLISHED


def trigger(request_id: str, who: str = "me") -> Trigger:
    return Trigger(request_id=request_id, process_name="p", version="", input={}, triggered_by=who)


async def test_concurrent_triggers_share_commits(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    uow = execution_unit_of_work(engine)
    commands = ExecutionCommands(
        uow, PublishedCatalog(), Wakeups(lambda: None, lambda: None), ProtoPresenter()
    )
    commits = 0

    def count(_conn: object) -> None:
        nonlocal commits
        commits += 1

    try:
        first = await commands.trigger(trigger("r-0"), "fp")
        writing, release = asyncio.Event(), asyncio.Event()

        async def hold(_tx: ExecutionTransaction) -> None:
            writing.set()
            await release.wait()

        event.listen(engine.sync_engine, "commit", count)
        holding = asyncio.ensure_future(uow.write(hold, grouped=True))
        await writing.wait()  # a grouped write is running
        calls = [commands.trigger(trigger(f"r-{i}"), "fp") for i in range(1, 9)]
        calls.append(commands.trigger(trigger("r-0"), "fp"))  # a retry
        calls.append(commands.trigger(trigger("r-0", "someone else"), "another"))  # key reused
        pending = [asyncio.ensure_future(call) for call in calls]
        async with asyncio.timeout(120):  # a safety net: ungrouped triggers never wait here
            while uow.grouped_waiting < len(pending):  # every trigger waits for its turn
                await asyncio.sleep(0.001)
        release.set()
        await holding
        answers = await asyncio.gather(*pending, return_exceptions=True)
    finally:
        event.remove(engine.sync_engine, "commit", count)

    try:
        started = answers[:8]
        assert all(not isinstance(a, BaseException) for a in started), answers
        ids = {a.id for a in started}  # type: ignore[union-attr]
        assert len(ids) == 8 and first.id not in ids
        assert answers[8] == first  # the retry: the first answer
        refused = answers[9]
        assert isinstance(refused, FailedPrecondition) and refused.reason == KEY_REUSED
        # The held write's, one for the new triggers, then one answering the retry: a
        # trigger's key is not looked up first, so a key seen before rolls its first
        # run back and is looked up when it runs again.
        assert commits == 3, commits
        async with engine.connect() as conn:
            stored = await conn.scalar(select(func.count()).select_from(executions))
        assert stored == 9
    finally:
        await engine.dispose()


async def test_a_new_trigger_does_not_look_its_key_up_and_a_retry_is_answered(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    commands = ExecutionCommands(
        execution_unit_of_work(engine),
        PublishedCatalog(),
        Wakeups(lambda: None, lambda: None),
        ProtoPresenter(),
    )
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        first = await commands.trigger(trigger("new-key"), "fp")
        looked_up = [s for s in statements if s.startswith("SELECT") and "idempotency" in s]
        remembered = [s for s in statements if s.startswith("INSERT INTO idempotency")]
        assert looked_up == [] and len(remembered) == 1, statements
        assert await commands.trigger(trigger("new-key"), "fp") == first
        with pytest.raises(FailedPrecondition) as refused:
            await commands.trigger(trigger("new-key", "someone else"), "another")
        assert refused.value.reason == KEY_REUSED
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(executions)) == 1
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        await engine.dispose()
