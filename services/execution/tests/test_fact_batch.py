"""Work facts are applied a fetched batch at a time (loops/fact_consumers.py through
Continuation.apply_batch), against the real database (SQLite and PostgreSQL): the
facts of one execution in stream order on its evolving state, the batch in one write
transaction with an inbox claim per message; a redelivered message applied once; an
execution another writer changed meanwhile decided again alone while the others
commit; a forged fact dropped and a fact whose definition cannot be read deferred
while the others apply. Counted, never timed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from execution_rows import first_row
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_execution import domain as d
from trinity_execution.application.continuation import Continuation
from trinity_execution.application.ports import ExecutionTransaction, PublishedDefinition
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.domain.commands import parse_request_key
from trinity_execution.infrastructure import translate
from trinity_execution.infrastructure.tables import dispatches
from trinity_execution.infrastructure.transactions import (
    ExecutionSqlUnitOfWork,
    execution_unit_of_work,
)
from trinity_execution.loops.fact_consumers import WORK_CONSUMER, fact_handler
from trinity_platform.consumer import Ack, Delivery, Nak, Outcome
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.envelope import Envelope, build_headers
from trinity_platform.errors import Unavailable
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SPEC = ProcessSpec(
    name="p",
    steps=[
        Step("a", AgentTaskConfig("writer", "do a")),
        Step("b", AgentTaskConfig("writer", "do b")),
        Step("c", AgentTaskConfig("writer", "do c"), depends_on=("a", "b")),
    ],
)
DEFINITIONS = {
    definition_id: PublishedDefinition(
        id=definition_id,
        name="p",
        version="1.0",
        process=d.CompiledProcess.compile(definition_id, "1.0", SPEC),
    )
    for definition_id in ("def-1", "def-2")
}


@dataclass
class Catalog:
    """The definition service (a port): ``down`` ids are unavailable; ``on_lookup`` runs
    at the next lookup (a concurrent writer's turn)."""

    down: set[str] = field(default_factory=set)
    on_lookup: list[Callable[[], Any]] = field(default_factory=list)

    async def by_name(self, name: str, version: str = "") -> PublishedDefinition:
        raise AssertionError("facts never look a definition up by name")

    async def by_id(self, definition_id: str) -> PublishedDefinition:
        if self.on_lookup:
            await self.on_lookup.pop()()
        if definition_id in self.down:
            raise Unavailable("the definition service is down")
        return DEFINITIONS[definition_id]


@dataclass
class Suite:
    engine: AsyncEngine
    uow: ExecutionSqlUnitOfWork
    catalog: Catalog
    handle: Callable[[Sequence[Delivery]], Any]
    work_ids: dict[tuple[str, str], str] = field(default_factory=dict)

    async def start(self, execution_id: str, definition_id: str = "def-1") -> None:
        """An execution whose steps a and b were requested, and accepted by work."""
        process = DEFINITIONS[definition_id].process
        started = d.decide(
            process, None, d.StartExecution(now=NOW, execution_id=execution_id, input={})
        )
        row = first_row(started.state, "p", NOW)

        async def insert(tx: ExecutionTransaction) -> None:
            await tx.executions.insert(row, fact_count=len(started.facts))
            await tx.write_decision(row, started, NOW, new=True)

        await self.uow.write(insert)
        async with self.engine.begin() as conn:
            keys = (
                await conn.scalars(
                    select(dispatches.c.key).where(dispatches.c.execution_id == execution_id)
                )
            ).all()
            for key in keys:
                parsed = parse_request_key(execution_id, key)
                assert parsed is not None
                work_id = f"w-{uuid.uuid4().hex[:8]}"
                self.work_ids[execution_id, parsed[0]] = work_id
                await conn.execute(
                    update(dispatches)
                    .where(dispatches.c.key == key)
                    .values(status="done", result_id=work_id)
                )

    async def state(self, execution_id: str) -> tuple[int, dict[str, str]]:
        """The execution's revision and its steps' statuses."""
        row = await self.uow.read(lambda tx: tx.executions.load(execution_id))
        assert row is not None
        state = row.execution_state()
        return row.revision, {step: str(s.status) for step, s in state.steps.items()}


def completed(
    suite: Suite,
    execution_id: str,
    step_id: str,
    *,
    message_id: str = "",
    work_id: str = "",
    source: str = "trinity.process/work",
) -> Delivery:
    fact = work_facts.WorkCompleted(
        work_id=work_id or suite.work_ids[execution_id, step_id],
        correlation=types_pb2.StepRef(
            execution_id=execution_id, step_id=step_id, iteration=1, attempt=1
        ),
    )
    fact.result.output = f"{step_id} done"
    headers = build_headers(
        message_id or str(uuid.uuid4()),
        fact.DESCRIPTOR.full_name,
        source,
        execution_id,
        datetime.now(UTC),
    )
    envelope = Envelope.from_headers(headers, fact.SerializeToString())
    return Delivery(envelope, cast(Any, None))  # the handler never touches the NATS message


@pytest.fixture
async def suite(database_url: str) -> AsyncIterator[Suite]:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    uow = execution_unit_of_work(engine)
    catalog = Catalog()
    continuation = Continuation(uow, catalog, Wakeups(lambda: None, lambda: None))
    handle = fact_handler(WORK_CONSUMER, continuation, translate.work_fact_to_event, "work")
    yield Suite(engine, uow, catalog, handle)
    await engine.dispose()


class Commits:
    """Counts the transactions committed on ``engine`` that wrote something (read ones
    commit too: they are told apart by their statements)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.writes = 0
        self._wrote = False

    def __enter__(self) -> Commits:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._commit)
        event.listen(self.engine, "rollback", self._rollback)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            self._wrote = True

    def _commit(self, _conn: Any) -> None:
        self.writes += self._wrote
        self._wrote = False

    def _rollback(self, _conn: Any) -> None:
        self._wrote = False


async def test_a_batch_is_applied_in_one_transaction_each_execution_in_stream_order(
    suite: Suite,
) -> None:
    await suite.start("ex-1")
    await suite.start("ex-2")
    (rev1, _), (rev2, _) = await suite.state("ex-1"), await suite.state("ex-2")
    batch = [
        completed(suite, "ex-1", "a"),
        completed(suite, "ex-2", "a"),
        completed(suite, "ex-1", "b"),  # c waits for both: it starts on a's outcome too
    ]
    with Commits(suite.engine) as commits:
        outcomes = await suite.handle(batch)
    assert outcomes == [Ack(), Ack(), Ack()]
    assert commits.writes == 1
    revision, steps = await suite.state("ex-1")
    assert revision == rev1 + 2
    assert (steps["a"], steps["b"], steps["c"]) == ("completed", "completed", "running")
    revision, steps = await suite.state("ex-2")
    assert revision == rev2 + 1
    assert (steps["a"], steps["b"], steps.get("c")) == ("completed", "running", None)


async def test_a_redelivered_message_in_a_batch_is_applied_once(suite: Suite) -> None:
    await suite.start("ex-1")
    rev1, _ = await suite.state("ex-1")
    first = completed(suite, "ex-1", "a")
    assert await suite.handle([first]) == [Ack()]
    # Its ack was lost: it comes again, in a batch with the execution's next fact.
    batch = [first, completed(suite, "ex-1", "b")]
    assert await suite.handle(batch) == [Ack(), Ack()]
    revision, steps = await suite.state("ex-1")
    assert revision == rev1 + 2  # a once, then b
    assert (steps["a"], steps["b"], steps["c"]) == ("completed", "completed", "running")
    # The whole batch again: nothing moves.
    with Commits(suite.engine) as commits:
        assert await suite.handle(batch) == [Ack(), Ack()]
    assert commits.writes == 0
    assert (await suite.state("ex-1"))[0] == revision


async def test_a_conflict_on_one_execution_does_not_fail_the_others(suite: Suite) -> None:
    """Another replica applies ex-2's fact b between the batch's read and its write: the
    batch's ex-2 decision is stale, ex-1 commits, ex-2 is decided again and applied."""
    for execution_id in ("ex-1", "ex-2", "ex-3"):
        await suite.start(execution_id)
    rev2, _ = await suite.state("ex-2")

    async def other_replica() -> None:
        assert await suite.handle([completed(suite, "ex-2", "b")]) == [Ack()]

    suite.catalog.on_lookup.append(other_replica)
    batch = [
        completed(suite, "ex-1", "a"),
        completed(suite, "ex-2", "a"),
        completed(suite, "ex-3", "b"),
    ]
    with Commits(suite.engine) as commits:
        outcomes = await suite.handle(batch)
    assert outcomes == [Ack(), Ack(), Ack()]
    # The other replica's, the batch's without ex-2, then ex-2's again on its own.
    assert commits.writes == 3
    revision, steps = await suite.state("ex-2")
    assert revision == rev2 + 2
    assert (steps["a"], steps["b"], steps["c"]) == ("completed", "completed", "running")
    assert (await suite.state("ex-1"))[1]["a"] == "completed"
    assert (await suite.state("ex-3"))[1]["b"] == "completed"


async def test_forged_and_unready_facts_in_a_batch_are_dropped_or_deferred_alone(
    suite: Suite,
) -> None:
    """A fact from another source, one with a work id no request of that step got, one
    whose request is still being sent (asked again shortly) and one whose definition
    cannot be read (the definition service is down: deferred) move nothing; the
    batch's genuine facts apply."""
    await suite.start("ex-1")
    await suite.start("ex-2")
    await suite.start("ex-3", "def-2")
    async with suite.engine.begin() as conn:  # ex-2's request for b is being sent again
        await conn.execute(
            update(dispatches)
            .where(dispatches.c.execution_id == "ex-2", dispatches.c.key.like("%/b/%"))
            .values(status="pending", result_id=None)
        )
    before = {e: await suite.state(e) for e in ("ex-1", "ex-2", "ex-3")}
    suite.catalog.down.add("def-2")
    batch = [
        completed(suite, "ex-1", "a", source="trinity.process/approval"),  # foreign source
        completed(suite, "ex-2", "a", work_id=suite.work_ids["ex-1", "a"]),  # another's id
        completed(suite, "ex-2", "b", work_id="w-not-yet"),  # its request is being sent
        completed(suite, "ex-3", "a"),  # its definition cannot be read now
        completed(suite, "ex-1", "b"),
        completed(suite, "ex-2", "a"),
    ]
    outcomes: list[Outcome] = await suite.handle(batch)
    assert outcomes == [Ack(), Ack(), Nak(delay=0.2), Nak(delay=2.0), Ack(), Ack()]
    revision, steps = await suite.state("ex-1")
    assert revision == before["ex-1"][0] + 1
    assert (steps["a"], steps["b"]) == ("running", "completed")
    revision, steps = await suite.state("ex-2")
    assert revision == before["ex-2"][0] + 1
    assert (steps["a"], steps["b"]) == ("completed", "running")
    assert await suite.state("ex-3") == before["ex-3"]
    # The service is back: the deferred fact applies when it comes again.
    suite.catalog.down.clear()
    assert await suite.handle([batch[3]]) == [Ack()]
    assert (await suite.state("ex-3"))[1]["a"] == "completed"
