"""One transaction per command, idempotent by the request's key, retried on a lost race."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_definition.domain.errors import ConcurrentModification
from trinity_definition.infrastructure.repository import SqlDefinitionRepository
from trinity_platform.idempotency import run_idempotent
from trinity_platform.outbox import OutboxSignal

R = TypeVar("R", bound=Message)
T = TypeVar("T")

# A lost race (another replica published the same name, or changed the draft) is
# retried on a fresh read; the retry sees the winner's state and decides again.
CONFLICT_ATTEMPTS = 5


class Transactions:
    def __init__(self, engine: AsyncEngine, signal: OutboxSignal | None = None) -> None:
        self.engine = engine
        self._signal = signal

    def _notify(self) -> None:
        if self._signal is not None:
            self._signal.notify()

    async def command(
        self,
        scope: str,
        request: Message,
        response_type: type[R],
        work: Callable[[SqlDefinitionRepository], Awaitable[R]],
        *,
        key: str,
    ) -> R:
        """``work`` in one transaction; a repeated ``key`` answers the first response."""

        async def in_transaction(conn: AsyncConnection) -> R:
            return await work(SqlDefinitionRepository(conn))

        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return await run_idempotent(
                    self.engine,
                    scope,
                    key,
                    request,
                    in_transaction,
                    response_type,
                    after_commit=self._notify,
                )
            except ConcurrentModification:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def query(self, work: Callable[[SqlDefinitionRepository], Awaitable[T]]) -> T:
        """``work`` in a read-only transaction."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(sqlite_begin="DEFERRED")
            async with conn.begin():
                return await work(SqlDefinitionRepository(conn))
