"""The unit of work on SQLAlchemy (SQLite and PostgreSQL): see :mod:`trinity_platform.unit_of_work`.

A service subclasses :class:`SqlTransaction` with its repositories (built on
``self.conn``) and, where its aggregates raise events, overrides
:meth:`SqlTransaction.new_events`; its composition root builds one
:class:`SqlUnitOfWork` and hands it to the application as the port::

    class WorkTransaction(SqlTransaction):
        def __init__(self, conn: AsyncConnection) -> None:
            super().__init__(conn)
            self.works = SqlWorkRepository(conn)

        async def new_events(self) -> list[NewEvents]:
            return [events_of(work) for work in self.works.changed()]

    uow = SqlUnitOfWork(runtime.engine, WorkTransaction, signal=runtime.outbox_signal,
                        name="work")
    work = await uow.write(body, idempotency=Idempotency.by_reference(...))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform import idempotency as idempotency_store
from trinity_platform import metrics
from trinity_platform.db import read_only
from trinity_platform.db_errors import transient_database_error
from trinity_platform.errors import Conflict, TrinityError
from trinity_platform.inbox import claim_message
from trinity_platform.logs import get_logger
from trinity_platform.outbox import OutboxSignal, add_many_to_outbox, event_outbox_messages
from trinity_platform.unit_of_work import CONFLICT_RETRY, Idempotency, NewEvents, RetryPolicy

T = TypeVar("T")
_log = get_logger(__name__)


class SqlTransaction:
    """One open transaction: the connection, the inbox, wake-ups after the commit.

    Subclasses add the service's repositories (on ``self.conn``).
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._wakes: list[Callable[[], None]] = []
        self._added: list[NewEvents] = []

    async def claim_message(self, consumer: str, message_id: str) -> bool:
        return await claim_message(self.conn, consumer, message_id)

    def after_commit(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)

    def add_events(self, events: NewEvents) -> None:
        """Write ``events`` to the outbox at the commit (for changes no repository tracks)."""
        self._added.append(events)

    async def new_events(self) -> Sequence[NewEvents]:
        """Called once, right before the commit: take (and clear) the new events of
        every aggregate this transaction changed, and write anything else they call
        for in this transaction. None by default."""
        return ()

    async def _flush(self) -> int:
        """Write the outbox rows of the change; returns how many."""
        changes = [*self._added, *await self.new_events()]
        self._added = []
        rows = [message for change in changes for message in event_outbox_messages(change)]
        if rows:
            await add_many_to_outbox(self.conn, rows)
        return len(rows)

    def _wake(self) -> None:
        wakes, self._wakes = self._wakes, []
        for wake in wakes:
            try:
                wake()
            except Exception as error:
                # The change is committed: a failed wake-up delays a loop (each also
                # polls), it must not turn the command's answer into an error.
                _log.warning("wake-up after commit failed", wake=repr(wake), error=repr(error))


S = TypeVar("S", bound=SqlTransaction)


def _database_error(error: Exception) -> Exception:
    """The answer for a failure of the database itself (mapped once, in db_errors)."""
    if isinstance(error, TrinityError):
        return error
    translated = transient_database_error(error)
    return error if translated is None else translated


class SqlUnitOfWork(Generic[S]):
    """Read and write transactions of type ``S`` on ``engine``.

    ``signal`` (the relay's) is notified after a commit that wrote outbox rows;
    ``name`` labels the conflict metric.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        transaction: Callable[[AsyncConnection], S],
        *,
        signal: OutboxSignal | None = None,
        name: str = "",
        retry: RetryPolicy = CONFLICT_RETRY,
    ) -> None:
        self.engine = engine
        self._transaction = transaction
        self._signal = signal
        self._name = name or "unit_of_work"
        self._retry = retry

    async def read(self, body: Callable[[S], Awaitable[T]]) -> T:
        try:
            async with read_only(self.engine) as conn, conn.begin():
                return await body(self._transaction(conn))
        except Exception as error:
            mapped = _database_error(error)
            if mapped is error:
                raise
            raise mapped from error

    async def write(
        self,
        body: Callable[[S], Awaitable[T]],
        *,
        idempotency: Idempotency[Any, T] | None = None,
    ) -> T:
        key = idempotency if idempotency is not None and idempotency.key else None
        attempts = max(1, self._retry.attempts)
        for attempt in range(attempts):
            try:
                return await self._write_once(body, key)
            except Conflict:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(self._retry.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_once(
        self, body: Callable[[S], Awaitable[T]], key: Idempotency[Any, T] | None
    ) -> T:
        written = 0
        try:
            async with self.engine.begin() as conn:
                transaction = self._transaction(conn)
                if key is not None:
                    remembered = await idempotency_store.lookup(
                        conn, key.scope, key.key, key.fingerprint
                    )
                    if remembered is not None:
                        return await key.replay(transaction, remembered)
                result = await body(transaction)
                if key is not None:
                    await idempotency_store.remember(
                        conn, key.scope, key.key, key.fingerprint, key.remember(result)
                    )
                written = await transaction._flush()
        except IntegrityError as error:
            # A unique key taken by a concurrent transaction (the idempotency key, an
            # outbox id, the service's own): run again, and see the winner's state.
            metrics.DB_CONFLICTS.labels(self._name).inc()
            raise Conflict("a concurrent transaction wrote the same key; retry") from error
        except Exception as error:
            mapped = _database_error(error)
            if mapped is error:
                raise
            raise mapped from error
        if written and self._signal is not None:
            self._signal.notify()
        transaction._wake()
        return result


__all__ = ["SqlTransaction", "SqlUnitOfWork"]
