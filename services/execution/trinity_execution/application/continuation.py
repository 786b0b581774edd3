"""Applies one event to one execution: load, decide, write — in one transaction.

Used for everything that continues an execution (work and approval facts,
fired timers, refused commands). The decision is made in a worker thread on the
state as read (see deciding.py); then, in one transaction, `guard` runs (the inbox
claim of a fact, the claim of a timer) so a redelivered message or a timer seen by
two replicas is applied once, and the decision is written if the execution is still
at the revision it was made on. A concurrent save by another replica (optimistic
concurrency) rolls everything back and the whole decision is made again on the
fresh state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_execution import domain as d
from trinity_execution.application.deciding import decide_off_loop
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.infrastructure.decision_store import write_decision
from trinity_execution.infrastructure.definition_catalog import DefinitionCatalog
from trinity_execution.infrastructure.repository import (
    ConcurrentUpdate,
    check_revision,
    load_execution,
)
from trinity_platform.db import read_only
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

Guard = Callable[[AsyncConnection], Awaitable[bool]]
EventFactory = Callable[[datetime], d.Event]

MAX_CONFLICT_RETRIES = 20


class _GuardRefused(Exception):
    """The guard said no: its transaction rolls back."""


class Continuation:
    def __init__(self, engine: AsyncEngine, catalog: DefinitionCatalog, wakeups: Wakeups) -> None:
        self._engine = engine
        self._catalog = catalog
        self._wakeups = wakeups

    async def apply(
        self,
        execution_id: str,
        event_for: EventFactory,
        *,
        guard: Guard | None = None,
        causation_id: str = "",
    ) -> d.Decision | None:
        """The decision made, or None when the execution is unknown or the guard refused."""
        with structlog.contextvars.bound_contextvars(execution_id=execution_id):
            return await self._apply(execution_id, event_for, guard, causation_id)

    async def _apply(
        self,
        execution_id: str,
        event_for: EventFactory,
        guard: Guard | None,
        causation_id: str,
    ) -> d.Decision | None:
        async with read_only(self._engine) as conn:
            row = await load_execution(conn, execution_id)
        if row is None:
            _log.info("event for an unknown execution ignored", execution_id=execution_id)
            return None
        published = await self._catalog.by_id(row.process_id)
        for attempt in range(MAX_CONFLICT_RETRIES):
            if attempt:
                async with read_only(self._engine) as conn:
                    row = await load_execution(conn, execution_id)
                assert row is not None  # executions are never deleted
                if row.process_id != published.id:  # moved to another version meanwhile
                    published = await self._catalog.by_id(row.process_id)
            now = datetime.now(UTC)
            state = d.ExecutionState.from_dict(row.state)
            decision = await decide_off_loop(published.process, state, event_for(now))
            written = None
            try:
                async with self._engine.begin() as conn:
                    if guard is not None and not await guard(conn):
                        raise _GuardRefused  # roll back whatever the guard did
                    if decision.ignored:
                        await check_revision(conn, execution_id, row.revision)
                    else:
                        written = await write_decision(
                            conn, row, decision, now, causation_id=causation_id
                        )
            except ConcurrentUpdate:
                continue
            except _GuardRefused:
                return None
            if decision.ignored:
                _log.debug("event ignored", execution_id=execution_id, why=decision.ignored)
            elif written is not None:
                self._wakeups.after_commit(written, published.process.steps)
            return decision
        raise ConcurrentUpdate(f"execution {execution_id} kept changing; giving up for now")
