"""What the handlers need from the outside world; the infrastructure implements it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol

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


class UnitOfWork(Protocol):
    """One transaction. On a clean exit it writes the events of every aggregate it
    saw to the outbox, then commits; on an exception it rolls back."""

    @property
    def works(self) -> WorkRepository: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def remembered(self, scope: str, key: str, fingerprint: str) -> str | None:
        """The work id a command with this idempotency key produced, or None.

        Raises ``FailedPrecondition(IDEMPOTENCY_KEY_REUSED)`` for a different request.
        """
        ...

    async def remember(self, scope: str, key: str, fingerprint: str, work_id: str) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        """``read_only``: a transaction that writes nothing (on SQLite it never takes the
        write lock, so queries do not queue behind commands)."""
        ...
