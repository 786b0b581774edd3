"""Keeps the execution database bounded (invariant 9).

An ended execution keeps its row (status, steps, cost: the process history) for
good, but its fact log, its finished dispatches and its fired or cancelled timers
are only needed while it runs or is watched. They go once the execution has
ended longer ago than the retention; the facts stream keeps the full record.
The deletes run as a write of the unit of work (its database-failure mapping and
conflict retry, SQLite's one writer), like every other write of the service.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution.application.ports import ExecutionTransaction, ExecutionUnitOfWork
from trinity_execution.infrastructure.tables import (
    dispatches,
    execution_facts,
    executions,
    for_each_items,
    timers,
)
from trinity_execution.infrastructure.transactions import SqlExecutionTransaction
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

DEFAULT_RETENTION = timedelta(days=7)


async def _prune(conn: AsyncConnection, cutoff: datetime) -> int:
    ended = select(executions.c.id).where(executions.c.ended_at < cutoff).scalar_subquery()
    removed = 0
    for statement in (
        delete(execution_facts).where(execution_facts.c.execution_id.in_(ended)),
        delete(dispatches).where(
            dispatches.c.execution_id.in_(ended), dispatches.c.status != "pending"
        ),
        delete(timers).where(timers.c.execution_id.in_(ended), timers.c.status != "pending"),
        delete(for_each_items).where(for_each_items.c.execution_id.in_(ended)),
    ):
        result = await conn.execute(statement)
        removed += int(result.rowcount or 0)
    return removed


async def prune_ended(
    uow: ExecutionUnitOfWork, retention: timedelta, now: datetime | None = None
) -> int:
    """Delete what executions that ended before now - retention no longer need; returns rows."""
    cutoff = (now or datetime.now(UTC)) - retention

    async def prune(tx: ExecutionTransaction) -> int:
        assert isinstance(tx, SqlExecutionTransaction)
        return await _prune(tx.conn, cutoff)

    return await uow.write(prune)


class Housekeeping:
    def __init__(
        self,
        uow: ExecutionUnitOfWork,
        retention: timedelta = DEFAULT_RETENTION,
        interval: float = 3600,
    ) -> None:
        self._uow = uow
        self._retention = retention
        self._interval = interval

    async def run(self) -> None:
        while True:
            removed = await prune_ended(self._uow, self._retention)
            if removed:
                _log.info("pruned records of ended executions", rows=removed)
            await asyncio.sleep(self._interval)
