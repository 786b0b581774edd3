"""Optimistic concurrency on real SQLite and PostgreSQL: a stale write is refused,
and the application retries a command that lost a race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncTransaction

from trinity_approval.application.commands import RequestApproval, SubmitDecision
from trinity_approval.application.service import ApprovalApplication
from trinity_approval.bootstrap import MIGRATIONS
from trinity_approval.domain import (
    ApprovalAlreadyDecided,
    ApprovalStatus,
    Decision,
    TimeoutAction,
)
from trinity_approval.infrastructure.notifications import NotificationPlanner, NotificationPolicy
from trinity_approval.infrastructure.tables import OUTBOX, dispatches
from trinity_approval.infrastructure.unit_of_work import SqlUnitOfWork
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.errors import Aborted


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


def unit_of_work(engine: AsyncEngine, readonly: bool = False) -> SqlUnitOfWork:
    planner = NotificationPlanner(NotificationPolicy())
    return SqlUnitOfWork(engine, planner, clock=lambda: datetime.now(UTC), readonly=readonly)


REQUEST = RequestApproval(
    request_id="r-1",
    execution_id="exec-1",
    step_id="review",
    iteration=1,
    title="",
    approvers=("alice", "bob@example.com"),
    timeout=timedelta(hours=1),
    on_timeout=TimeoutAction.REJECT,
)


async def test_a_stale_write_is_refused_and_changes_nothing(engine: AsyncEngine) -> None:
    app = ApprovalApplication(lambda readonly: unit_of_work(engine, readonly))
    created = await app.request_approval(REQUEST)
    stale = await app.get_approval(created.id)  # version 1

    await app.submit_decision(SubmitDecision("d-1", created.id, "alice", Decision.APPROVE))

    stale.decide(
        principal="bob@example.com", decision=Decision.REJECT, comment="", now=stale.created_at
    )
    async with unit_of_work(engine) as uow:
        with pytest.raises(Aborted):
            await uow.approvals.save(stale)
    current = await app.get_approval(created.id)
    assert (current.status, current.decided_by, current.version) == (
        ApprovalStatus.APPROVED,
        "alice",
        2,
    )
    async with engine.connect() as conn:
        facts = await conn.scalar(select(func.count()).select_from(OUTBOX))
        notifications = (await conn.execute(select(dispatches.c.status))).scalars().all()
    assert facts == 2  # ApprovalRequested, ApprovalDecided
    # One per approver, dropped once decided (none were sent: no sender ran).
    assert sorted(notifications) == ["obsolete", "obsolete"]


async def test_a_command_that_lost_a_race_is_retried_on_fresh_state(engine: AsyncEngine) -> None:
    """The first attempt of bob's decision loads the approval, then alice decides
    before bob's write: bob's attempt is refused by the version check, retried, and
    then answered with the final state's refusal."""
    app = ApprovalApplication(lambda readonly: unit_of_work(engine, readonly))
    created = await app.request_approval(REQUEST)
    attempts = 0

    class RacingUnitOfWork(SqlUnitOfWork):
        async def commit(self) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                # alice decides in between (another transaction, after bob loaded);
                # bob's connection is released first (SQLite lets one writer in at a time).
                await self.__aexit__(None, None, None)
                await app.submit_decision(
                    SubmitDecision("a-1", created.id, "alice", Decision.APPROVE)
                )
                raise Aborted("version moved")
            await super().commit()

    planner = NotificationPlanner(NotificationPolicy())
    racing = ApprovalApplication(
        lambda readonly: RacingUnitOfWork(engine, planner, clock=lambda: datetime.now(UTC))
    )
    with pytest.raises(ApprovalAlreadyDecided):
        await racing.submit_decision(
            SubmitDecision("b-1", created.id, "bob@example.com", Decision.REJECT)
        )
    assert attempts == 1  # the retry found the approval decided before committing
    final = await app.get_approval(created.id)
    assert (final.status, final.decided_by) == (ApprovalStatus.APPROVED, "alice")


@pytest.mark.parametrize("readonly", [False, True])
async def test_a_unit_of_work_cancelled_while_it_begins_closes_its_connection(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, readonly: bool
) -> None:
    """Background tasks are cancelled at stop. A unit of work cancelled after it got
    its connection but before its transaction began must still return the connection
    (on SQLite it would otherwise hold the writers' gate, and every later write would
    wait for it)."""
    beginning = asyncio.Event()

    async def begin_forever(self: AsyncTransaction, is_ctxmanager: bool = False) -> None:
        beginning.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patch:
        patch.setattr(AsyncTransaction, "start", begin_forever)
        uow = unit_of_work(engine, readonly)
        task = asyncio.ensure_future(uow.__aenter__())
        await asyncio.wait_for(beginning.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert engine.sync_engine.pool.checkedout() == 0
    gate = getattr(engine, "gate", None)
    assert gate is None or not gate.locked()
    app = ApprovalApplication(lambda readonly: unit_of_work(engine, readonly))
    created = await asyncio.wait_for(app.request_approval(REQUEST), 10)  # writes still go
    assert created.status is ApprovalStatus.PENDING
