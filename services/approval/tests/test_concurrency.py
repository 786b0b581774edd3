"""Optimistic concurrency on real SQLite and PostgreSQL: a stale write is refused,
and the application retries a command that lost a race."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_approval.application.commands import RequestApproval, SubmitDecision
from trinity_approval.application.service import ApprovalApplication
from trinity_approval.bootstrap import MIGRATIONS
from trinity_approval.domain import (
    Approval,
    ApprovalAlreadyDecided,
    ApprovalStatus,
    Decision,
    TimeoutAction,
)
from trinity_approval.infrastructure.notifications import NotificationPlanner, NotificationPolicy
from trinity_approval.infrastructure.tables import OUTBOX, dispatches
from trinity_approval.infrastructure.transaction import (
    SqlApprovalTransaction,
    Wakes,
    approval_unit_of_work,
)
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.errors import Aborted
from trinity_platform.sql_unit_of_work import SqlUnitOfWork
from trinity_platform.unit_of_work import RetryPolicy


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


def application(engine: AsyncEngine) -> ApprovalApplication:
    planner = NotificationPlanner(NotificationPolicy())
    return ApprovalApplication(approval_unit_of_work(engine, planner, lambda: datetime.now(UTC)))


def transaction(conn: AsyncConnection) -> SqlApprovalTransaction:
    planner = NotificationPlanner(NotificationPolicy())
    return SqlApprovalTransaction(
        conn, planner=planner, clock=lambda: datetime.now(UTC), wakes=Wakes()
    )


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
    app = application(engine)
    created = await app.request_approval(REQUEST)
    stale = await app.get_approval(created.id)  # version 1

    await app.submit_decision(SubmitDecision("d-1", created.id, "alice", Decision.APPROVE))

    stale.decide(
        principal="bob@example.com", decision=Decision.REJECT, comment="", now=stale.created_at
    )
    once = SqlUnitOfWork(engine, transaction, retry=RetryPolicy(attempts=1))
    with pytest.raises(Aborted):
        await once.write(lambda tx: tx.approvals.save(stale))
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
    """Bob's first attempt works on the approval as he read it before alice decided:
    its write is refused by the version check, the command runs again on fresh state,
    and is answered with the final state's refusal."""
    app = application(engine)
    created = await app.request_approval(REQUEST)
    before_alice = await app.get_approval(created.id)
    await app.submit_decision(SubmitDecision("a-1", created.id, "alice", Decision.APPROVE))
    attempts = 0

    def racing_transaction(conn: AsyncConnection) -> SqlApprovalTransaction:
        tx = transaction(conn)
        fresh = tx.approvals.get_for_update

        async def first_read_is_stale(
            approval_id: str, *, skip_locked: bool = False
        ) -> Approval | None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                return before_alice
            return await fresh(approval_id, skip_locked=skip_locked)

        tx.approvals.get_for_update = first_read_is_stale  # type: ignore[method-assign]
        return tx

    racing = ApprovalApplication(SqlUnitOfWork(engine, racing_transaction))
    with pytest.raises(ApprovalAlreadyDecided):
        await racing.submit_decision(
            SubmitDecision("b-1", created.id, "bob@example.com", Decision.REJECT)
        )
    assert attempts == 2  # refused once, then answered from the decided approval
    final = await app.get_approval(created.id)
    assert (final.status, final.decided_by) == (ApprovalStatus.APPROVED, "alice")
    async with engine.connect() as conn:
        facts = await conn.scalar(select(func.count()).select_from(OUTBOX))
    assert facts == 2  # ApprovalRequested, alice's ApprovalDecided: nothing of bob's


# A unit of work cancelled while it begins returns its connection: the platform's
# test_unit_of_work.py shows it for every service.
