"""The background loops stop when cancelled, also when asyncio loses the request.

On Python 3.11 ``asyncio.wait_for`` drops a cancellation that arrives in the loop
iteration its inner awaitable completes in — e.g. when the platform's SQLite gate
(``wait_for(gate.acquire(), …)``) is granted just as the runtime cancels the
background tasks at stop. The loops must still end, or ``stop()`` waits forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_approval.application.commands import RequestApproval
from trinity_approval.application.service import ApprovalApplication
from trinity_approval.bootstrap import MIGRATIONS
from trinity_approval.domain import TimeoutAction
from trinity_approval.infrastructure.deadline_watcher import DeadlineWatcher
from trinity_approval.infrastructure.notifications import NotificationPlanner, NotificationPolicy
from trinity_approval.infrastructure.transaction import approval_unit_of_work
from trinity_approval.infrastructure.work_sender import WorkNotificationSender
from trinity_platform.db import create_engine, run_migrations

LATER = timedelta(hours=2)


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_url)
    await run_migrations(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


def application(engine: AsyncEngine, clock: Callable[[], datetime]) -> ApprovalApplication:
    planner = NotificationPlanner(NotificationPolicy())
    return ApprovalApplication(approval_unit_of_work(engine, planner, clock), clock=clock)


async def request_one(engine: AsyncEngine) -> None:
    """A pending approval with a passed deadline (2 h later) and due notifications."""
    await application(engine, lambda: datetime.now(UTC)).request_approval(
        RequestApproval(
            request_id="r",
            execution_id="e",
            step_id="s",
            iteration=1,
            title="",
            approvers=("alice@example.com",),
            timeout=timedelta(hours=1),
            on_timeout=TimeoutAction.REJECT,
        )
    )


async def cancel_as_the_gate_opens(
    engine: AsyncEngine, loop: Callable[[], Awaitable[None]]
) -> None:
    gate: asyncio.Lock = engine.gate  # type: ignore[attr-defined]
    await gate.acquire()  # another transaction holds the database
    task = asyncio.ensure_future(loop())
    for _ in range(200):  # until the loop waits for the gate
        await asyncio.sleep(0.005)
        if gate._waiters:  # type: ignore[attr-defined]
            break
    assert gate._waiters, "the loop never waited for the database"  # type: ignore[attr-defined]
    gate.release()  # the gate goes to the loop …
    task.cancel()  # … in the iteration it is cancelled
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_the_deadline_watcher_stops(engine: AsyncEngine) -> None:
    await request_one(engine)
    later = application(engine, lambda: datetime.now(UTC) + LATER)
    watcher = DeadlineWatcher(later, poll_interval=0.01)
    await cancel_as_the_gate_opens(engine, watcher.run)


async def test_the_notification_sender_stops(engine: AsyncEngine) -> None:
    await request_one(engine)
    sender = WorkNotificationSender(engine, None, poll_interval=0.01)
    await cancel_as_the_gate_opens(engine, sender.run)
