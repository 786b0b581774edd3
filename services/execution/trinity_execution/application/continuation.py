"""Applies one event to one execution: load, decide, write — in one transaction.

Used for everything that continues an execution (work and approval facts,
fired timers, refused commands). The decision is made in a worker thread on the
state as read (see deciding.py); then, in one transaction, `guard` runs (the inbox
claim of a fact, the claim of a timer) so a redelivered message or a timer seen by
two replicas is applied once, and the decision is written if the execution is still
at the revision it was made on. A concurrent save by another replica (optimistic
concurrency) rolls everything back and the whole decision is made again on the
fresh state. Decisions handed in while another commits share the next transaction
(the unit of work's group commit), each with its own claim and revision check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import structlog

from trinity_execution import domain as d
from trinity_execution.application.deciding import decide_off_loop, decision_attempts
from trinity_execution.application.ports import (
    ConcurrentUpdate,
    DefinitionCatalog,
    ExecutionRow,
    ExecutionTransaction,
    ExecutionUnitOfWork,
)
from trinity_execution.application.wakeups import Wakeups
from trinity_platform.logs import get_logger
from trinity_process_model.model import Step

_log = get_logger(__name__)

Guard = Callable[[ExecutionTransaction], Awaitable[bool]]
Loader = Callable[[ExecutionTransaction], Awaitable[ExecutionRow | None]]
EventFactory = Callable[[datetime], d.Event]


class _GuardRefused(Exception):
    """The guard said no: its transaction rolls back."""


class Continuation:
    def __init__(
        self, uow: ExecutionUnitOfWork, catalog: DefinitionCatalog, wakeups: Wakeups
    ) -> None:
        self._uow = uow
        self._catalog = catalog
        self._wakeups = wakeups

    async def apply(
        self,
        execution_id: str,
        event_for: EventFactory,
        *,
        guard: Guard | None = None,
        causation_id: str = "",
        first_load: Loader | None = None,
    ) -> d.Decision | None:
        """The decision made, or None when the execution is unknown (or not to be
        continued: ``first_load`` said None) or the guard refused.

        ``first_load`` replaces the first read of the execution: a fact's handler reads
        the request it answers in the same statement (one read per fact, not two).
        A decision made again after a concurrent update reloads the execution alone."""
        with structlog.contextvars.bound_contextvars(execution_id=execution_id):
            return await self._apply(execution_id, event_for, guard, causation_id, first_load)

    async def _apply(
        self,
        execution_id: str,
        event_for: EventFactory,
        guard: Guard | None,
        causation_id: str,
        first_load: Loader | None,
    ) -> d.Decision | None:
        if first_load is None:
            row = await self._load(execution_id)
        else:
            row = await self._uow.read(first_load)
        if row is None:
            if first_load is None:  # (a first_load says why itself)
                _log.info("event for an unknown execution ignored", execution_id=execution_id)
            return None
        published = await self._catalog.by_id(row.process_id)
        async for attempt in decision_attempts():
            if attempt:
                row = await self._load(execution_id)
                assert row is not None  # executions are never deleted
                if row.process_id != published.id:  # moved to another version meanwhile
                    published = await self._catalog.by_id(row.process_id)
            now = datetime.now(UTC)
            state = d.ExecutionState.from_dict(row.state)
            decision = await decide_off_loop(published.process, state, event_for(now))

            async def write(
                tx: ExecutionTransaction,
                row: ExecutionRow = row,
                decision: d.Decision = decision,
                now: datetime = now,
                steps: Mapping[str, Step] = published.process.steps,
            ) -> None:
                if guard is not None and not await guard(tx):
                    raise _GuardRefused  # roll back whatever the guard did
                if decision.ignored:
                    await tx.executions.check_revision(execution_id, row.revision)
                    return
                written = await tx.write_decision(row, decision, now, causation_id=causation_id)
                self._wakeups.on_commit(tx, written, steps)

            try:
                # Grouped: decisions written while one commits share the next commit
                # (one's conflict or refused guard is its own; the rest commit).
                await self._uow.write(write, grouped=True)
            except ConcurrentUpdate:
                continue
            except _GuardRefused:
                return None
            if decision.ignored:
                _log.debug("event ignored", execution_id=execution_id, why=decision.ignored)
            return decision
        raise ConcurrentUpdate(f"execution {execution_id} kept changing; giving up for now")

    async def _load(self, execution_id: str) -> ExecutionRow | None:
        return await self._uow.read(lambda tx: tx.executions.load(execution_id))
