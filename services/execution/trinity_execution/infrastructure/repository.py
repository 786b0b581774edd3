"""Executions in the database: load and save with optimistic concurrency.

The engine's state is stored as compact JSON: the execution's row keeps all but its
steps (``ExecutionState.header_dict``), each step has a row of its own in
``execution_steps`` (rewritten only when a decision changed it) and is decoded only
when a decision reads it. `revision` on the execution's row makes a save fail
(ConcurrentUpdate) when another replica saved in between, and the caller retries its
whole decision; step rows are written only in the transaction that moved it on.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_execution import domain as d
from trinity_execution.application.ports import ConcurrentUpdate, ExecutionRow, ListFilter
from trinity_execution.infrastructure.item_store import attach_items
from trinity_execution.infrastructure.tables import execution_steps, executions
from trinity_platform import metrics
from trinity_platform.db import read_only
from trinity_platform.statements import PerDialect


def _encode(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), sort_keys=False)


_INSERT_EXECUTION = insert(executions)  # built once: values go as parameters


async def insert_execution(conn: AsyncConnection, row: ExecutionRow, *, fact_count: int) -> None:
    """Insert a new execution whose first decision wrote `fact_count` facts (its steps
    are written by that decision: ``write_decision(..., new=True)``)."""
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


def steps_column(dialect: str) -> Any:
    """The execution's steps as one JSON object (step id → its compact state as JSON
    text), read in the execution's own statement: the rows come back as one value and
    each step is decoded only when a decision reads it."""
    aggregate = func.json_object_agg if dialect == "postgresql" else func.json_group_object
    return (
        select(aggregate(execution_steps.c.step_id, execution_steps.c.state))
        .where(execution_steps.c.execution_id == executions.c.id)
        .scalar_subquery()
        .label("steps")
    )


def steps_of(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """The ``steps_column`` of a result row (None: no steps; PostgreSQL's driver decodes
    the object itself, its values stay JSON text)."""
    if not value:
        return {}
    return json.loads(value) if isinstance(value, str) else value


_WITH_STEPS = PerDialect(lambda dialect: select(executions, steps_column(dialect)))
_LOAD_MANY = PerDialect(
    lambda dialect: select(executions, steps_column(dialect)).where(
        executions.c.id.in_(bindparam("ids", expanding=True))
    )
)


async def load_execution(
    conn: AsyncConnection, execution_id: str, *, for_update: bool = False
) -> ExecutionRow | None:
    query = _WITH_STEPS(conn).where(executions.c.id == execution_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update(of=executions)
    found = (await conn.execute(query)).mappings().first()
    if found is None:
        return None
    return await with_steps(conn, found)


async def with_steps(conn: AsyncConnection, found: RowMapping) -> ExecutionRow:
    """The ExecutionRow of a result row of the executions table with ``steps_column``
    (and what a decision may need of its for_each steps' items)."""
    steps = steps_of(found["steps"])
    row = row_of(found, steps)
    await attach_items(conn, row.id, row.state.get("active", ()), steps)
    return row


async def load_executions(
    conn: AsyncConnection, execution_ids: Collection[str]
) -> dict[str, ExecutionRow]:
    """The executions of ``execution_ids`` that exist, by id: one read for a batch of facts."""
    if not execution_ids:
        return {}
    found = (await conn.execute(_LOAD_MANY(conn), {"ids": list(execution_ids)})).mappings().all()
    rows = {}
    for mapping in found:
        row = await with_steps(conn, mapping)
        rows[row.id] = row
    return rows


def row_of(found: RowMapping, steps: Mapping[str, Any]) -> ExecutionRow:
    """An ExecutionRow from a result row of the executions table and its steps."""
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
        steps=steps,
    )


def _upsert_step(dialect: str) -> Any:
    insert_step = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(execution_steps)
    return insert_step.on_conflict_do_update(
        index_elements=[execution_steps.c.execution_id, execution_steps.c.step_id],
        set_={"state": insert_step.excluded.state},
    )


_UPSERT_STEP = PerDialect(_upsert_step)
_INSERT_STEP = insert(execution_steps)


async def save_steps(
    conn: AsyncConnection,
    execution_id: str,
    steps: Mapping[str, d.StepState],
    changed: Iterable[str],
    *,
    new: bool = False,
    dropped: Iterable[str] = (),
) -> None:
    """Write the rows of the ``changed`` steps (inserted when ``new``: the execution has
    none yet) and delete those of the ``dropped`` ones. Call only in the transaction
    that moved the execution's revision on (insert_execution, save_execution)."""
    rows = [
        {
            "execution_id": execution_id,
            "step_id": step_id,
            "state": _encode(steps[step_id].to_dict()),
        }
        for step_id in changed
    ]
    if rows:
        await conn.execute(_INSERT_STEP if new else _UPSERT_STEP(conn), rows)
    gone = list(dropped)
    if gone:
        await conn.execute(
            delete(execution_steps).where(
                execution_steps.c.execution_id == execution_id,
                execution_steps.c.step_id.in_(gone),
            )
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
    query = _WITH_STEPS(conn)
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
    found = (await conn.execute(query.limit(limit))).mappings().all()
    return [row_of(r, steps_of(r["steps"])) for r in found]
