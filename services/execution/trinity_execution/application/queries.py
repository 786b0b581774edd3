"""Queries: execution status, process history, and the watch stream of an execution's facts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Generic, TypeVar

from trinity_execution.application.commands import require
from trinity_execution.application.ports import (
    DefinitionCatalog,
    ExecutionRow,
    ExecutionTransaction,
    ExecutionUnitOfWork,
    ListFilter,
    LoggedFact,
    Presenter,
)
from trinity_execution.application.wakeups import Wakeups
from trinity_platform.errors import NotFound
from trinity_platform.pagination import encode_page_token, page_request

__all__ = ["ExecutionQueries", "ListFilter"]

V = TypeVar("V")

WATCH_POLL_SECONDS = 1.0


MAX_SEQUENCE = 2**63 - 1


class ExecutionQueries(Generic[V]):
    def __init__(
        self,
        uow: ExecutionUnitOfWork,
        catalog: DefinitionCatalog,
        wakeups: Wakeups,
        presenter: Presenter[V],
    ) -> None:
        self._uow = uow
        self._catalog = catalog
        self._wakeups = wakeups
        self._presenter = presenter

    async def _row(self, execution_id: str) -> ExecutionRow:
        require("execution_id", execution_id)
        row = await self._uow.read(lambda tx: tx.executions.load(execution_id))
        if row is None:
            raise NotFound(f"execution {execution_id} not found", reason="EXECUTION_NOT_FOUND")
        return row

    async def _view(self, row: ExecutionRow, *, with_steps: bool) -> V:
        published = await self._catalog.by_id(row.process_id)
        return self._presenter.execution(
            published.process,
            row.execution_state(),
            process_name=row.process_name,
            created_at=row.created_at,
            with_steps=with_steps,
        )

    async def get(self, execution_id: str) -> V:
        return await self._view(await self._row(execution_id), with_steps=True)

    async def list(self, where: ListFilter, page_size: int, page_token: str) -> tuple[list[V], str]:
        filters = [
            where.process_name,
            where.status,
            where.created_after.isoformat() if where.created_after else "",
            where.created_before.isoformat() if where.created_before else "",
        ]
        page = page_request(page_size, page_token, filters)
        after = None
        if page.after is not None:
            after = (datetime.fromisoformat(page.after[0]), page.after[1])
        rows = await self._uow.read(lambda tx: tx.executions.page(where, after, page.size + 1))
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

            async def read(
                tx: ExecutionTransaction, position: int = position
            ) -> tuple[list[LoggedFact], ExecutionRow | None]:
                batch = await tx.facts.after(execution_id, position)
                return batch, await tx.executions.load(execution_id) if not batch else None

            batch, row = await self._uow.read(read)
            for fact in batch:
                position = fact.sequence
                yield fact
            if batch:
                continue
            assert row is not None
            if row.ended_at is not None and row.fact_count <= position:
                return
            await self._wakeups.facts_changed(WATCH_POLL_SECONDS)
