"""The approval service's transaction on the platform's unit of work.

At the commit, the events of every approval the repository saw become facts in the
outbox (invariant 1: the relay publishes them after the commit) and notification
dispatches for the work service, in the transaction of the change. After the commit
the relay (by the platform), the notification sender and the deadline watcher wake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_approval.codec import event_to_fact
from trinity_approval.domain import ApprovalRequested
from trinity_approval.infrastructure.notifications import NotificationPlanner
from trinity_approval.infrastructure.repository import SqlApprovalRepository
from trinity_platform.outbox import OutboxSignal
from trinity_platform.sql_unit_of_work import SqlTransaction, SqlUnitOfWork
from trinity_platform.subjects import fact_subject
from trinity_platform.unit_of_work import EventMessage, NewEvents

SERVICE = "approval"


def _nobody() -> None:
    pass


@dataclass
class Wakes:
    """Who to wake after a commit (set once the background tasks exist)."""

    dispatches: Callable[[], None] = _nobody
    new_approvals: Callable[[], None] = _nobody


class SqlApprovalTransaction(SqlTransaction):
    def __init__(
        self,
        conn: AsyncConnection,
        *,
        planner: NotificationPlanner,
        clock: Callable[[], datetime],
        wakes: Wakes,
    ) -> None:
        super().__init__(conn)
        self.approvals = SqlApprovalRepository(conn, clock)
        self._planner = planner
        self._clock = clock
        self._after = wakes

    async def new_events(self) -> list[NewEvents]:
        changes = []
        dispatches = new_approvals = 0
        for approval in self.approvals.seen.values():
            events, approval.events = approval.events, []
            if not events:
                continue
            messages = []
            for event in events:
                name, message = event_to_fact(event)
                messages.append(
                    EventMessage(message, fact_subject(SERVICE, name), event.execution_id)
                )
            changes.append(NewEvents(SERVICE, approval.id, approval.version, messages))
            dispatches += await self._planner.plan(self.conn, approval, events, self._clock())
            new_approvals += sum(isinstance(e, ApprovalRequested) for e in events)
        if dispatches:
            self.after_commit(self._after.dispatches)
        if new_approvals:
            self.after_commit(self._after.new_approvals)
        return changes


def approval_transactions(
    planner: NotificationPlanner, clock: Callable[[], datetime], wakes: Wakes | None = None
) -> Callable[[AsyncConnection], SqlApprovalTransaction]:
    """The transaction factory of the service's ``SqlUnitOfWork``."""
    wakes = wakes or Wakes()

    def open_transaction(conn: AsyncConnection) -> SqlApprovalTransaction:
        return SqlApprovalTransaction(conn, planner=planner, clock=clock, wakes=wakes)

    return open_transaction


def approval_unit_of_work(
    engine: AsyncEngine,
    planner: NotificationPlanner,
    clock: Callable[[], datetime],
    *,
    signal: OutboxSignal | None = None,
    wakes: Wakes | None = None,
) -> SqlUnitOfWork[SqlApprovalTransaction]:
    """The service's unit of work (``signal``: the relay's, woken when facts commit)."""
    return SqlUnitOfWork(
        engine, approval_transactions(planner, clock, wakes), signal=signal, name=SERVICE
    )
