"""What the handlers need from the outside world; the infrastructure implements it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from trinity_platform.unit_of_work import Transaction, UnitOfWork
from trinity_work.application.commands import ListWork
from trinity_work.domain.work import WorkRequest


@dataclass(frozen=True)
class WorkPage:
    items: Sequence[WorkRequest]
    has_more: bool = False


class WorkRepository(Protocol):
    async def add(self, work: WorkRequest) -> None: ...

    async def get(self, work_id: str, *, for_update: bool = False) -> WorkRequest:
        """Raises ``WorkNotFound``."""
        ...

    async def save(self, work: WorkRequest) -> None:
        """Persist a loaded aggregate; raises ``Aborted`` when its version moved."""
        ...

    async def list(self, query: ListWork) -> WorkPage: ...

    async def lease_expired(self, now: datetime, limit: int) -> Sequence[str]:
        """Ids of started work whose lease ran out (claimed, where the database can)."""
        ...


class WorkTransaction(Transaction, Protocol):
    """One transaction. At its commit the events of every aggregate the repository
    added or saved become outbox rows (the platform's unit of work writes them)."""

    @property
    def works(self) -> WorkRepository: ...


# The platform's unit of work over the work service's transactions: ``read`` for
# queries, ``write`` for commands (idempotent by key, retried on a lost race).
WorkUnitOfWork = UnitOfWork[WorkTransaction]
