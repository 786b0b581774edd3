"""What the handlers need from storage (implemented in infrastructure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol

from trinity_approval.application.commands import Cursor
from trinity_approval.domain import Approval, ApprovalStatus


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
        """Write a changed approval; raises ``Aborted`` when its version moved meanwhile."""
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


class IdempotencyStore(Protocol):
    async def lookup(self, scope: str, key: str, fingerprint: str) -> str | None:
        """The remembered approval id; ``FailedPrecondition`` when the key was used
        with a different request."""
        ...

    async def remember(self, scope: str, key: str, fingerprint: str, approval_id: str) -> None: ...


class UnitOfWork(Protocol):
    """One transaction. ``commit()`` also writes the events of every approval the
    repository saw as facts to the outbox (and the notifications they call for)."""

    @property
    def approvals(self) -> ApprovalRepository: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...
