"""Cancel, pause, resume and the migration of one execution are idempotent by their key
(SQLite and PostgreSQL): a retry is answered the first answer — whether the execution
would refuse it now or would take it again — and a key reused for another request is
refused. The key is looked up by the write transaction itself (a refusal looks it up
then): no look-up transaction of its own before the command's reads and write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.execution.v1 import execution_pb2
from trinity_execution import domain as d
from trinity_execution.api.answers import ProtoPresenter
from trinity_execution.application.commands import Control, ExecutionCommands, Trigger
from trinity_execution.application.migrations import ExecutionMigrations, Migration
from trinity_execution.application.ports import PublishedDefinition
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.infrastructure.transactions import execution_unit_of_work
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.errors import FailedPrecondition, NotFound
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
RUNNING = execution_pb2.EXECUTION_STATUS_RUNNING
PAUSED = execution_pb2.EXECUTION_STATUS_PAUSED
CANCELLED = execution_pb2.EXECUTION_STATUS_CANCELLED


class PublishedCatalog:
    """The definition service's answer for process ``p`` (a port; e2e drives the real one)."""

    async def by_name(self, name: str, version: str = "") -> PublishedDefinition:
        return PUBLISHED

    async def by_id(self, definition_id: str) -> PublishedDefinition:
        return PUBLISHED


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


def commands_on(engine: AsyncEngine) -> ExecutionCommands[execution_pb2.Execution]:
    return ExecutionCommands(
        execution_unit_of_work(engine),
        PublishedCatalog(),
        Wakeups(lambda: None, lambda: None),
        ProtoPresenter(),
    )


async def status_of(engine: AsyncEngine, execution_id: str, what: str = "status") -> str:
    row = await execution_unit_of_work(engine).read(lambda tx: tx.executions.load(execution_id))
    assert row is not None
    return str(getattr(row, what))


async def started(commands: ExecutionCommands[execution_pb2.Execution]) -> str:
    trigger = Trigger(request_id="", process_name="p", version="", input={}, triggered_by="me")
    return (await commands.trigger(trigger, "trigger")).id


async def test_a_retry_is_answered_the_first_answer_and_a_reused_key_refused(
    engine: AsyncEngine,
) -> None:
    commands = commands_on(engine)
    execution_id = await started(commands)
    pause = Control("k-pause", execution_id, "me", "look")
    paused = await commands.pause(pause, "pause")
    assert paused.status == PAUSED
    # Paused now, so a new pause would be refused: the retry gets the first answer.
    assert await commands.pause(pause, "pause") == paused
    resume = Control("k-resume", execution_id, "me")
    resumed = await commands.resume(resume, "resume")
    assert resumed.status == RUNNING
    # Running again, so a new pause would pass: the retry still only answers.
    assert await commands.pause(pause, "pause") == paused
    assert await commands.resume(resume, "resume") == resumed
    assert await status_of(engine, execution_id) == "running"

    cancel = Control("k-cancel", execution_id, "me", "done")
    cancelled = await commands.cancel(cancel, "cancel")
    assert cancelled.status == CANCELLED
    assert await commands.cancel(cancel, "cancel") == cancelled
    assert await commands.pause(pause, "pause") == paused  # refused now, answered

    # The same keys for other requests: refused, whether the command would pass or not.
    other = await started(commands)
    for call, control in (
        (commands.pause, Control("k-pause", other, "me")),  # would pass
        (commands.cancel, Control("k-cancel", other, "me")),  # would pass
        (commands.resume, Control("k-resume", other, "me")),  # would be refused
        (commands.cancel, Control("k-cancel", "no-such-execution", "me")),
    ):
        with pytest.raises(FailedPrecondition) as refused:
            await call(control, "another request")
        assert refused.value.reason == KEY_REUSED
    with pytest.raises(NotFound):
        await commands.cancel(Control("k-new", "no-such-execution", "me"), "cancel")
    assert await status_of(engine, other) == "running"


async def test_a_command_looks_its_key_up_in_its_write_transaction(engine: AsyncEngine) -> None:
    commands = commands_on(engine)
    execution_id = await started(commands)
    transactions = 0

    def count(*_: object) -> None:
        nonlocal transactions
        transactions += 1

    event.listen(engine.sync_engine, "begin", count)
    try:
        await commands.pause(Control("k-pause", execution_id, "me"), "pause")
        assert transactions == 2  # the execution read, the write (its key looked up inside)
        transactions = 0
        await commands.resume(Control("k-resume", execution_id, "me"), "resume")
        await commands.pause(Control("k-pause", execution_id, "me"), "pause")  # a retry
        assert transactions == 4
    finally:
        event.remove(engine.sync_engine, "begin", count)


V2 = PublishedDefinition(
    id="def-2",
    name="p",
    version="1.1",
    process=d.CompiledProcess.compile(
        "def-2",
        "1.1",
        ProcessSpec(
            name="p",
            steps=[
                Step("a", AgentTaskConfig("w", "do a")),
                Step("b", AgentTaskConfig("w", "do b"), depends_on=["a"]),
            ],
        ),
    ),
)


class TwoVersions(PublishedCatalog):
    async def by_name(self, name: str, version: str = "") -> PublishedDefinition:
        return V2 if version == "1.1" else PUBLISHED

    async def by_id(self, definition_id: str) -> PublishedDefinition:
        return V2 if definition_id == V2.id else PUBLISHED


async def test_a_migration_of_one_execution_looks_its_key_up_in_its_write(
    engine: AsyncEngine,
) -> None:
    commands = commands_on(engine)
    execution_id = await started(commands)
    migrations = ExecutionMigrations(
        execution_unit_of_work(engine),
        TwoVersions(),
        Wakeups(lambda: None, lambda: None),
        ProtoPresenter(),
    )
    move = Migration("k-move", "1.1", execution_id=execution_id)
    transactions = 0

    def count(*_: object) -> None:
        nonlocal transactions
        transactions += 1

    event.listen(engine.sync_engine, "begin", count)
    try:
        first = await migrations.migrate(move, "move")
        assert transactions == 3  # which executions, the execution, the write (key inside)
    finally:
        event.remove(engine.sync_engine, "begin", count)
    assert first.outcomes[0].migrated
    # On 1.1 now, so moving it again would be refused: the retry gets the first answer.
    assert await migrations.migrate(move, "move") == first
    with pytest.raises(FailedPrecondition) as refused:
        await migrations.migrate(Migration("k-move", "1.1", execution_id="other"), "other")
    assert refused.value.reason == KEY_REUSED
    other = await started(commands)
    with pytest.raises(FailedPrecondition) as refused:
        await migrations.migrate(Migration("k-move", "1.1", execution_id=other), "other")
    assert refused.value.reason == KEY_REUSED
    assert await status_of(engine, other, "process_version") == "1.0"
    assert await status_of(engine, execution_id, "process_version") == "1.1"
