"""Executions in the database: load and save with optimistic concurrency.

The engine's state is stored as compact JSON in one row; `revision` makes a
save fail (ConcurrentUpdate) when another replica saved in between, and the
caller retries its whole decision.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_execution.application.ports import ConcurrentUpdate, ExecutionRow, ListFilter
from trinity_execution.infrastructure.item_store import attach_items
from trinity_execution.infrastructure.tables import executions
from trinity_platform import metrics
from trinity_platform.db import read_only


def _encode(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), sort_keys=False)


_INSERT_EXECUTION = insert(executions)  # built once: values go as parameters


async def insert_execution(conn: AsyncConnection, row: ExecutionRow, *, fact_count: int) -> None:
    """Insert a new execution whose first decision wrote `fact_count` facts."""
    await conn.execute(
        _INSERT_EXECUTION,
        {
            "id": row.id,
            "process_id": row.process_id,
            "process_name": row.process_name,
            "process_version": row.process_version,
            "status": row.status,
            "trigger_kind": row.trigger_kind,
            "triggered_by": row.triggered_by,
            "state": _encode(row.state),
            "revision": row.revision,
            "fact_count": fact_count,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "ended_at": row.ended_at,
        },
    )


async def load_execution(
    conn: AsyncConnection, execution_id: str, *, for_update: bool = False
) -> ExecutionRow | None:
    query = select(executions).where(executions.c.id == execution_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    found = (await conn.execute(query)).mappings().first()
    if found is None:
        return None
    row = row_of(found)
    await attach_items(conn, execution_id, row.state)
    return row


_LOAD_MANY = select(executions).where(executions.c.id.in_(bindparam("ids", expanding=True)))


async def load_executions(
    conn: AsyncConnection, execution_ids: Collection[str]
) -> dict[str, ExecutionRow]:
    """The executions of ``execution_ids`` that exist, by id: one read for a batch of facts."""
    if not execution_ids:
        return {}
    found = (await conn.execute(_LOAD_MANY, {"ids": list(execution_ids)})).mappings().all()
    rows = {}
    for mapping in found:
        row = row_of(mapping)
        await attach_items(conn, row.id, row.state)
        rows[row.id] = row
    return rows


def row_of(found: RowMapping) -> ExecutionRow:
    """An ExecutionRow from a result row of the executions table."""
    return ExecutionRow(
        id=found["id"],
        process_id=found["process_id"],
        process_name=found["process_name"],
        process_version=found["process_version"],
        status=found["status"],
        trigger_kind=found["trigger_kind"],
        triggered_by=found["triggered_by"],
        state=json.loads(found["state"]),
        revision=found["revision"],
        fact_count=found["fact_count"],
        created_at=found["created_at"],
        updated_at=found["updated_at"],
        ended_at=found["ended_at"],
    )


async def save_execution(
    conn: AsyncConnection,
    execution_id: str,
    *,
    expected_revision: int,
    status: str,
    state: dict[str, Any],
    now: datetime,
    ended_at: datetime | None,
    fact_count: int,
) -> int:
    """Write the new state if nobody saved since `expected_revision`; returns the new revision."""
    result = await conn.execute(
        update(executions)
        .where(executions.c.id == execution_id, executions.c.revision == expected_revision)
        .values(
            status=status,
            state=_encode(state),
            revision=expected_revision + 1,
            updated_at=now,
            ended_at=ended_at,
            fact_count=fact_count,
        )
    )
    if result.rowcount != 1:
        metrics.DB_CONFLICTS.labels("execution").inc()
        raise ConcurrentUpdate(f"execution {execution_id} changed concurrently")
    return expected_revision + 1


# Executions admitted and not yet done: they hold steps in flight, dispatches, work in
# the queue and facts in the outbox. Paused ones wait for an operator and hold none.
IN_PROGRESS = ("pending", "running")


async def count_in_progress(engine: AsyncEngine) -> int:
    """How many executions are pending or running (the admission count)."""
    async with read_only(engine) as conn:
        count = await conn.scalar(
            select(func.count()).select_from(executions).where(executions.c.status.in_(IN_PROGRESS))
        )
    return int(count or 0)


async def check_revision(conn: AsyncConnection, execution_id: str, revision: int) -> None:
    """Raise ConcurrentUpdate unless the execution is still at `revision` (a decision made
    on that revision, changing nothing, still holds)."""
    query = select(executions.c.revision).where(executions.c.id == execution_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    current = (await conn.execute(query)).scalar_one_or_none()
    if current != revision:
        raise ConcurrentUpdate(f"execution {execution_id} changed concurrently")


async def executions_of_version(
    conn: AsyncConnection, process_name: str, version: str, statuses: tuple[str, ...], limit: int
) -> list[str]:
    """Ids of the executions of one process version in these statuses, oldest first."""
    query = (
        select(executions.c.id)
        .where(
            executions.c.process_name == process_name,
            executions.c.process_version == version,
            executions.c.status.in_(statuses),
        )
        .order_by(executions.c.created_at, executions.c.id)
        .limit(limit)
    )
    return list((await conn.scalars(query)).all())


async def repoint_execution(
    conn: AsyncConnection, execution_id: str, *, process_id: str, process_version: str
) -> None:
    """Record the version a migrated execution now runs (in the migration's transaction)."""
    await conn.execute(
        update(executions)
        .where(executions.c.id == execution_id)
        .values(process_id=process_id, process_version=process_version)
    )


async def list_page(
    conn: AsyncConnection, where: ListFilter, after: tuple[datetime, str] | None, limit: int
) -> list[ExecutionRow]:
    """Executions matching ``where``, newest first (created_at, id), after ``after``."""
    query = select(executions)
    if where.process_name:
        query = query.where(executions.c.process_name == where.process_name)
    if where.status:
        query = query.where(executions.c.status == where.status)
    if where.created_after:
        query = query.where(executions.c.created_at >= where.created_after)
    if where.created_before:
        query = query.where(executions.c.created_at < where.created_before)
    if after is not None:
        after_time, after_id = after
        query = query.where(
            or_(
                executions.c.created_at < after_time,
                and_(executions.c.created_at == after_time, executions.c.id < after_id),
            )
        )
    query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc())
    return [row_of(r) for r in (await conn.execute(query.limit(limit))).mappings()]
