"""Queries: execution status, process history, and the watch stream of an execution's facts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.execution.v1 import execution_pb2
from trinity_execution import domain as d
from trinity_execution.application.commands import require
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.infrastructure import translate
from trinity_execution.infrastructure.definition_catalog import DefinitionCatalog
from trinity_execution.infrastructure.fact_log import LoggedFact, facts_after
from trinity_execution.infrastructure.repository import ExecutionRow, load_execution, row_of
from trinity_execution.infrastructure.tables import executions
from trinity_platform.db import read_only
from trinity_platform.errors import NotFound
from trinity_platform.pagination import encode_page_token, page_request

WATCH_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ListFilter:
    process_name: str = ""
    status: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


MAX_SEQUENCE = 2**63 - 1


class ExecutionQueries:
    def __init__(self, engine: AsyncEngine, catalog: DefinitionCatalog, wakeups: Wakeups) -> None:
        self._engine = engine
        self._catalog = catalog
        self._wakeups = wakeups

    async def _row(self, execution_id: str) -> ExecutionRow:
        require("execution_id", execution_id)
        async with read_only(self._engine) as conn:
            row = await load_execution(conn, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found", reason="EXECUTION_NOT_FOUND")
        return row

    async def _view(self, row: ExecutionRow, *, with_steps: bool) -> execution_pb2.Execution:
        published = await self._catalog.by_id(row.process_id)
        return translate.execution_view(
            published.process,
            d.ExecutionState.from_dict(row.state),
            process_name=row.process_name,
            created_at=row.created_at,
            with_steps=with_steps,
        )

    async def get(self, execution_id: str) -> execution_pb2.Execution:
        return await self._view(await self._row(execution_id), with_steps=True)

    async def list(
        self, where: ListFilter, page_size: int, page_token: str
    ) -> tuple[list[execution_pb2.Execution], str]:
        filters = [
            where.process_name,
            where.status,
            where.created_after.isoformat() if where.created_after else "",
            where.created_before.isoformat() if where.created_before else "",
        ]
        page = page_request(page_size, page_token, filters)
        query = select(executions)
        if where.process_name:
            query = query.where(executions.c.process_name == where.process_name)
        if where.status:
            query = query.where(executions.c.status == where.status)
        if where.created_after:
            query = query.where(executions.c.created_at >= where.created_after)
        if where.created_before:
            query = query.where(executions.c.created_at < where.created_before)
        if page.after is not None:
            after_time, after_id = datetime.fromisoformat(page.after[0]), page.after[1]
            query = query.where(
                or_(
                    executions.c.created_at < after_time,
                    and_(executions.c.created_at == after_time, executions.c.id < after_id),
                )
            )
        query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc())
        async with read_only(self._engine) as conn:
            rows = [row_of(r) for r in (await conn.execute(query.limit(page.size + 1))).mappings()]
        more = len(rows) > page.size
        rows = rows[: page.size]
        views = [await self._view(row, with_steps=False) for row in rows]
        token = ""
        if more:
            last = rows[-1]
            token = encode_page_token([last.created_at.isoformat(), last.id], filters)
        return views, token

    async def watch(self, execution_id: str, after_sequence: int) -> AsyncIterator[LoggedFact]:
        """The execution's facts after `after_sequence`, live, until it has ended."""
        await self._row(execution_id)
        # The contract's uint64 goes past the databases' BIGINT; no sequence gets there.
        position = min(after_sequence, MAX_SEQUENCE)
        while True:
            async with read_only(self._engine) as conn:
                batch = await facts_after(conn, execution_id, position)
                row = await load_execution(conn, execution_id) if not batch else None
            for fact in batch:
                position = fact.sequence
                yield fact
            if batch:
                continue
            assert row is not None
            if row.ended_at is not None and row.fact_count <= position:
                return
            await self._wakeups.facts_changed(WATCH_POLL_SECONDS)
