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
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform import idempotency as idempotency_store
from trinity_platform import metrics
from trinity_platform.db import read_only
from trinity_platform.db_errors import transient_database_error
from trinity_platform.errors import Conflict, TrinityError, Unavailable
from trinity_platform.group_commit import GroupCommit, Refused
from trinity_platform.inbox import claim_message
from trinity_platform.logs import get_logger
from trinity_platform.outbox import (
    OutboxSignal,
    add_many_to_outbox,
    event_outbox_messages,
    take_written,
)
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


@dataclass(frozen=True)
class _Grouped(Generic[S]):
    """A grouped write waiting for its turn."""

    body: Callable[[S], Awaitable[Any]]
    key: Idempotency[Any, Any] | None
    look_up: bool
    context: contextvars.Context
    """The caller's (its span: the outbox rows carry the caller's trace)."""


class _Rollback(Exception):
    """One item of a group failed: the group's transaction is rolled back."""


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
        self._group: GroupCommit[_Grouped[S], Any] = GroupCommit(self._write_group)

    @property
    def grouped_waiting(self) -> int:
        """Grouped writes handed in that wait for the running write (their group's turn)."""
        return self._group.waiting

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
        grouped: bool = False,
    ) -> T:
        key = idempotency if idempotency is not None and idempotency.key else None
        look_up = key is None or key.look_up_first
        if key is not None:
            idempotency_store.check_key(key.key)
        attempts = max(1, self._retry.attempts)
        attempt = 0
        while True:
            try:
                if grouped:
                    result: T = await self._group.submit(
                        _Grouped(body, key, look_up, contextvars.copy_context())
                    )
                    return result
                return await self._write_once(body, key, look_up)
            except Unavailable:
                raise
            except Exception as error:
                if not look_up:
                    # Remembered already, or refused perhaps because the first request
                    # did it: run again the careful way (see Idempotency.look_up_first).
                    look_up = True
                    continue
                if not isinstance(error, Conflict) or attempt == attempts - 1:
                    raise
                await asyncio.sleep(self._retry.delay(attempt))
                attempt += 1

    async def _write_once(
        self, body: Callable[[S], Awaitable[T]], key: Idempotency[Any, T] | None, look_up: bool
    ) -> T:
        try:
            async with self.engine.begin() as conn:
                take_written(conn)  # left by a transaction not of this unit of work
                transaction = self._transaction(conn)
                result = await self._run(transaction, body, key, look_up)
                written = take_written(conn)
        except Exception as error:
            mapped = self._failure(error)
            if mapped is error:
                raise
            raise mapped from error
        self._committed(written, [transaction])
        return result

    async def _write_group(self, items: list[_Grouped[S]]) -> list[Any | Refused]:
        """``items`` in one transaction. An item that fails is answered with its error
        and the transaction is run again without it (on PostgreSQL a failed statement
        spoils the transaction; everywhere the item's partial writes must go), so one
        caller's refusal is not another's. A failed commit is every item's error."""
        loop = asyncio.get_running_loop()
        answers: dict[int, Any | Refused] = {}
        pending = list(range(len(items)))
        while pending:
            results: dict[int, Any] = {}
            transactions: list[S] = []
            written: list[str] = []
            failed: tuple[int, Exception] | None = None
            try:
                async with self.engine.begin() as conn:
                    take_written(conn)  # left by a transaction not of this unit of work
                    for index in pending:
                        transaction = self._transaction(conn)
                        item = items[index]
                        try:
                            results[index] = await loop.create_task(
                                self._run(transaction, item.body, item.key, item.look_up),
                                context=item.context,
                            )
                        except Exception as error:
                            failed = (index, error)
                            raise _Rollback from error
                        transactions.append(transaction)
                    written = take_written(conn)
            except _Rollback:
                pass
            except Exception as error:
                mapped = self._failure(error)
                if mapped is error:
                    raise
                raise mapped from error
            if failed is not None:
                failed_index, failure = failed
                answers[failed_index] = Refused(self._failure(failure))
                pending.remove(failed_index)
                continue
            answers.update(results)
            self._committed(written, transactions)
            break
        return [answers[index] for index in range(len(items))]

    async def _run(
        self,
        transaction: S,
        body: Callable[[S], Awaitable[T]],
        key: Idempotency[Any, T] | None,
        look_up: bool,
    ) -> T:
        """``body`` (or the replay of its key, looked up first with ``look_up``) in
        ``transaction``, then its outbox rows. Raises ``Conflict`` when the key turns
        out remembered after all (by a concurrent request, or without ``look_up``)."""
        conn = transaction.conn
        if key is not None and look_up:
            remembered = await idempotency_store.lookup(
                conn, key.scope, key.key, key.fingerprint, key.earlier
            )
            if remembered is not None:
                return await key.replay(transaction, remembered)
        result = await body(transaction)
        if key is not None and not await idempotency_store.remember_if_new(
            conn, key.scope, key.key, key.fingerprint, key.remember(result)
        ):
            if look_up:
                metrics.DB_CONFLICTS.labels(self._name).inc()
            raise Conflict("a request with the same key was remembered first; retry")
        await transaction._flush()
        return result

    def _failure(self, error: Exception) -> Exception:
        """What a write's caller is answered for ``error``."""
        if isinstance(error, IntegrityError):
            # A unique key taken by a concurrent transaction (the idempotency key, an
            # outbox id, the service's own): run again, and see the winner's state.
            metrics.DB_CONFLICTS.labels(self._name).inc()
            conflict = Conflict("a concurrent transaction wrote the same key; retry")
            conflict.__cause__ = error
            return conflict
        return _database_error(error)

    def _committed(self, written: list[str], transactions: Sequence[S]) -> None:
        """After the commit: the relay learns which messages were committed, and when
        (the fact lag is measured from then), then the transactions' wake-ups run."""
        if written and self._signal is not None:
            self._signal.committed(written)
        for transaction in transactions:
            transaction._wake()


__all__ = ["SqlTransaction", "SqlUnitOfWork"]
