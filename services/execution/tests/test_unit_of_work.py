"""Execution's writes go through the platform's unit of work: a decision's facts get the
one message-id scheme, a stale decision writes nothing and wakes nobody, wake-ups run
only after the commit, and a remembered answer is given back to a retry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from execution_rows import first_row
from sqlalchemy import func, select

from trinity_execution import domain as d
from trinity_execution.application.ports import (
    AnswerRemembered,
    ConcurrentUpdate,
    ExecutionRow,
    ExecutionTransaction,
    remembered_answer,
)
from trinity_execution.infrastructure.tables import execution_facts
from trinity_execution.infrastructure.transactions import execution_unit_of_work
from trinity_platform.db import OUTBOX, create_engine, run_migrations
from trinity_platform.errors import FailedPrecondition
from trinity_platform.unit_of_work import event_message_id
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PROCESS = d.CompiledProcess.compile(
    "def-1",
    "1.0",
    ProcessSpec(
        name="p",
        steps=[
            Step("a", AgentTaskConfig("writer", "do a")),
            Step("b", AgentTaskConfig("writer", "do b"), depends_on=("a",)),
        ],
    ),
)


async def outbox_ids(engine, execution_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(OUTBOX.c.message_id)
            .where(OUTBOX.c.ce_subject == execution_id)
            .order_by(OUTBOX.c.id)
        )
        return [row.message_id for row in rows]


async def test_decisions_are_written_with_the_one_message_id_scheme(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    uow = execution_unit_of_work(engine)
    started = d.decide(
        PROCESS,
        None,
        d.StartExecution(now=NOW, execution_id="uow-ex-1", input={}, triggered_by="me"),
    )
    row = first_row(started.state, "p", NOW)
    woken: list[str] = []
    try:

        async def start(tx: ExecutionTransaction) -> None:
            await tx.executions.insert(row, fact_count=len(started.facts))
            await tx.write_decision(row, started, NOW, new=True)
            tx.after_commit(lambda: woken.append("started"))
            assert woken == []  # not before the commit

        await uow.write(start)
        assert woken == ["started"]
        first = [event_message_id("execution", row.id, 1, i) for i in range(len(started.facts))]
        assert started.facts and await outbox_ids(engine, row.id) == first

        stored = await uow.read(lambda tx: tx.executions.load(row.id))
        assert stored is not None and stored.revision == 1
        cancelled = d.decide(PROCESS, started.state, d.CancelExecution(now=NOW, by="me"))

        async def cancel(
            tx: ExecutionTransaction, at: ExecutionRow = stored, what: str = "cancelled"
        ) -> None:
            await tx.write_decision(at, cancelled, NOW)
            tx.after_commit(lambda: woken.append(what))

        await uow.write(cancel)
        second = [event_message_id("execution", row.id, 2, i) for i in range(len(cancelled.facts))]
        assert await outbox_ids(engine, row.id) == first + second

        # The same decision made on the old revision loses: nothing written, nobody woken.
        with pytest.raises(ConcurrentUpdate):
            await uow.write(lambda tx: cancel(tx, stored, "stale"))
        assert woken == ["started", "cancelled"]
        assert await outbox_ids(engine, row.id) == first + second
        async with engine.connect() as conn:
            logged = await conn.scalar(
                select(func.count())
                .select_from(execution_facts)
                .where(execution_facts.c.execution_id == row.id)
            )
        assert logged == len(started.facts) + len(cancelled.facts)
    finally:
        await engine.dispose()


async def test_a_remembered_answer_answers_a_retry(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    uow = execution_unit_of_work(engine)
    runs: list[str] = []

    def idempotency(fingerprint: str):  # type: ignore[no-untyped-def]
        return remembered_answer("execution.Test", "key-1", fingerprint, str.encode, bytes.decode)

    async def body(tx: ExecutionTransaction) -> str:
        runs.append("ran")
        return f"answer {len(runs)}"

    try:
        assert await uow.write(body, idempotency=idempotency("fp-1")) == "answer 1"
        assert await uow.write(body, idempotency=idempotency("fp-1")) == "answer 1"
        assert runs == ["ran"]
        with pytest.raises(FailedPrecondition) as reused:
            await uow.write(body, idempotency=idempotency("fp-2"))
        assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"

        # A delivery that remembers its answer inside a decision's transaction learns that
        # a concurrent one remembered first (and its transaction rolls back).
        async def remember(tx: ExecutionTransaction) -> None:
            await tx.idempotency.remember("execution.Test", "key-2", "fp", b"mine")

        await uow.write(remember)
        with pytest.raises(AnswerRemembered):
            await uow.write(remember)
        assert runs == ["ran"]
    finally:
        await engine.dispose()
