"""The application facade: runs each handler in a fresh unit of work, with the
service's clock, and retries on an optimistic-concurrency conflict (another
replica, or the deadline watcher, changed the approval first)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from trinity_approval.application import handlers
from trinity_approval.application.commands import (
    CancelApproval,
    ListApprovals,
    ListPendingApprovals,
    RequestApproval,
    SubmitDecision,
)
from trinity_approval.application.handlers import Page
from trinity_approval.application.ports import UnitOfWork
from trinity_approval.domain import Approval
from trinity_platform.errors import Aborted

T = TypeVar("T")

# (readonly) -> a new unit of work
UnitOfWorkFactory = Callable[[bool], UnitOfWork]
Clock = Callable[[], datetime]

CONFLICT_ATTEMPTS = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_approval_id() -> str:
    return str(uuid.uuid4())


class ApprovalApplication:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        clock: Clock = utc_now,
        new_id: Callable[[], str] = new_approval_id,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._new_id = new_id

    async def _retrying(self, run: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return await run(self._uow(False))
            except Aborted:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def request_approval(self, command: RequestApproval) -> Approval:
        return await self._retrying(
            lambda uow: handlers.request_approval(
                command, uow, now=self._clock(), new_id=self._new_id()
            )
        )

    async def submit_decision(self, command: SubmitDecision) -> Approval:
        return await self._retrying(
            lambda uow: handlers.submit_decision(command, uow, now=self._clock())
        )

    async def cancel_approval(self, command: CancelApproval) -> Approval:
        return await self._retrying(
            lambda uow: handlers.cancel_approval(command, uow, now=self._clock())
        )

    async def fire_deadline(self, approval_id: str) -> Approval | None:
        return await self._retrying(
            lambda uow: handlers.fire_deadline(approval_id, uow, now=self._clock())
        )

    async def get_approval(self, approval_id: str) -> Approval:
        return await handlers.get_approval(approval_id, self._uow(True))

    async def list_pending_approvals(self, query: ListPendingApprovals) -> Page:
        return await handlers.list_pending_approvals(query, self._uow(True))

    async def list_approvals(self, query: ListApprovals) -> Page:
        return await handlers.list_approvals(query, self._uow(True))

    async def due_approvals(self, limit: int) -> list[str]:
        uow = self._uow(True)
        async with uow:
            return list(await uow.approvals.due(self._clock(), limit))

    async def next_deadline(self) -> datetime | None:
        uow = self._uow(True)
        async with uow:
            return await uow.approvals.next_deadline()

    def now(self) -> datetime:
        return self._clock()
