"""The execution service's transaction on the platform's unit of work (SQLite and
PostgreSQL): the adapters of :mod:`trinity_execution.application.ports` over its
connection. A decision's facts reach the outbox through the unit of work (``add_events``,
written at the commit with the platform's one message-id scheme)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_execution import domain as d
from trinity_execution.application.ports import (
    AnswerRemembered,
    BufferedMessage,
    ExecutionRow,
    ListFilter,
    LoggedFact,
    Subscription,
    Written,
)
from trinity_execution.infrastructure import fact_log, message_store, repository
from trinity_execution.infrastructure.decision_store import write_decision
from trinity_execution.infrastructure.timer_store import claim_timer
from trinity_platform import idempotency
from trinity_platform.outbox import OutboxSignal
from trinity_platform.sql_unit_of_work import SqlTransaction, SqlUnitOfWork


class SqlExecutions:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def load(self, execution_id: str, *, for_update: bool = False) -> ExecutionRow | None:
        return await repository.load_execution(self._conn, execution_id, for_update=for_update)

    async def load_many(self, execution_ids: Collection[str]) -> dict[str, ExecutionRow]:
        return await repository.load_executions(self._conn, execution_ids)

    async def insert(self, row: ExecutionRow, *, fact_count: int) -> None:
        await repository.insert_execution(self._conn, row, fact_count=fact_count)

    async def check_revision(self, execution_id: str, revision: int) -> None:
        await repository.check_revision(self._conn, execution_id, revision)

    async def of_version(
        self, process_name: str, version: str, statuses: tuple[str, ...], limit: int
    ) -> list[str]:
        return await repository.executions_of_version(
            self._conn, process_name, version, statuses, limit
        )

    async def repoint(self, execution_id: str, *, process_id: str, process_version: str) -> None:
        await repository.repoint_execution(
            self._conn, execution_id, process_id=process_id, process_version=process_version
        )

    async def page(
        self, where: ListFilter, after: tuple[datetime, str] | None, limit: int
    ) -> list[ExecutionRow]:
        return await repository.list_page(self._conn, where, after, limit)


class SqlFactLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def after(
        self, execution_id: str, after_sequence: int, limit: int = 500
    ) -> list[LoggedFact]:
        return await fact_log.facts_after(self._conn, execution_id, after_sequence, limit)


class SqlMessages:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def find_subscription(
        self, message_name: str, correlation_key: str, execution_id: str = ""
    ) -> Subscription | None:
        return await message_store.find_subscription(
            self._conn, message_name, correlation_key, execution_id
        )

    async def take_subscription(self, key: str) -> bool:
        return await message_store.take_subscription(self._conn, key)

    async def keep(self, message: BufferedMessage, now: datetime) -> bool:
        return await message_store.buffer_message(self._conn, message, now)

    async def take_kept(self, message_id: str) -> bool:
        return await message_store.take_buffered(self._conn, message_id)

    async def count_kept(self, now: datetime) -> int:
        return await message_store.count_kept(self._conn, now)

    async def deliverable(self, now: datetime) -> list[tuple[BufferedMessage, Subscription]]:
        return await message_store.deliverable(self._conn, now)

    async def purge_expired(self, now: datetime) -> int:
        return await message_store.purge_expired(self._conn, now)


class SqlTimers:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(self, timer_id: str) -> bool:
        return await claim_timer(self._conn, timer_id)


class SqlIdempotency:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lookup(self, scope: str, key: str, fingerprint: str) -> bytes | None:
        return await idempotency.lookup(self._conn, scope, key, fingerprint)

    async def remember(self, scope: str, key: str, fingerprint: str, answer: bytes) -> None:
        try:
            await idempotency.remember(self._conn, scope, key, fingerprint, answer)
        except IntegrityError as error:
            raise AnswerRemembered(f"an answer for {key!r} was remembered meanwhile") from error


class SqlExecutionTransaction(SqlTransaction):
    """The platform's transaction with the execution service's repositories."""

    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn)
        self.executions = SqlExecutions(conn)
        self.facts = SqlFactLog(conn)
        self.messages = SqlMessages(conn)
        self.timers = SqlTimers(conn)
        self.idempotency = SqlIdempotency(conn)

    async def write_decision(
        self,
        row: ExecutionRow,
        decision: d.Decision,
        now: datetime,
        *,
        causation_id: str = "",
        new: bool = False,
    ) -> Written:
        return await write_decision(
            self.conn, row, decision, now, self.add_events, causation_id=causation_id, new=new
        )


ExecutionSqlUnitOfWork = SqlUnitOfWork[SqlExecutionTransaction]


def execution_unit_of_work(
    engine: AsyncEngine, signal: OutboxSignal | None = None
) -> ExecutionSqlUnitOfWork:
    """The platform's unit of work over the execution service's transactions."""
    return SqlUnitOfWork(engine, SqlExecutionTransaction, signal=signal, name="execution")
