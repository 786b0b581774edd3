"""What the handlers need from storage (implemented in infrastructure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from trinity_approval.application.commands import Cursor
from trinity_approval.domain import Approval, ApprovalStatus
from trinity_platform.unit_of_work import Transaction, UnitOfWork


class ApprovalRepository(Protocol):
    async def add(self, approval: Approval) -> None: ...

    async def get(self, approval_id: str) -> Approval | None: ...

    async def get_for_update(
        self, approval_id: str, *, skip_locked: bool = False
    ) -> Approval | None:
        """Lock the row for this transaction; with ``skip_locked``, None when another
        transaction holds it."""
        ...

    async def save(self, approval: Approval) -> None:
        """Write a changed approval; raises ``Conflict`` when its version moved meanwhile."""
        ...

    async def list_pending(
        self, approver: str, after: Cursor | None, limit: int
    ) -> Sequence[Approval]: ...

    async def list_for_execution(
        self, execution_id: str, status: ApprovalStatus | None, after: Cursor | None, limit: int
    ) -> Sequence[Approval]: ...

    async def due(self, now: datetime, limit: int) -> Sequence[str]:
        """Ids of pending approvals whose deadline is at or before ``now``, earliest first."""
        ...

    async def next_deadline(self) -> datetime | None: ...


class ApprovalTransaction(Transaction, Protocol):
    """One transaction. At its commit the events of every approval the repository
    added or saved become facts in the outbox (and the notifications they call for)."""

    @property
    def approvals(self) -> ApprovalRepository: ...


# The platform's unit of work over the approval service's transactions: ``read`` for
# queries, ``write`` for commands (idempotent by key, retried on a lost race).
ApprovalUnitOfWork = UnitOfWork[ApprovalTransaction]
