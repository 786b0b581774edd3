"""Applies events to executions: load, decide, write — each execution in one transaction.

Used for everything that continues an execution (work and approval facts, fired
timers, refused commands). :meth:`Continuation.apply_batch` takes a batch of events
(a consumer's fetched facts, in stream order): the executions are read at once, the
decisions are made in one worker-thread hop on the states as read (see deciding.py),
the events of one execution one after the other on its evolving state; then each
execution's writes are handed to the unit of work's group commit together, so the
batch is written in one transaction. In it, per event, ``guard`` runs (the inbox
claim of a fact, the claim of a timer) so a redelivered message or a timer seen by two
replicas is applied once, and each decision is written if the execution is still at
the revision it was made on. An execution that another writer saved meanwhile
(optimistic concurrency), or whose guard refused, is left out of the transaction (the
group commit runs it again without it) and is read and decided again on its own; the
other executions commit. :meth:`Continuation.apply` is a batch of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from trinity_execution import domain as d
from trinity_execution.application.deciding import decide_in_order_off_loop, decision_attempts
from trinity_execution.application.ports import (
    ConcurrentUpdate,
    DefinitionCatalog,
    ExecutionRow,
    ExecutionTransaction,
    ExecutionUnitOfWork,
    PublishedDefinition,
)
from trinity_execution.application.wakeups import Wakeups
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

Guard = Callable[[ExecutionTransaction], Awaitable[bool]]
Loader = Callable[[ExecutionTransaction], Awaitable[ExecutionRow | None]]
BatchLoader = Callable[[ExecutionTransaction], Awaitable[Sequence[ExecutionRow | None]]]
EventFactory = Callable[[datetime], d.Event]
Applied = d.Decision | None | Exception
"""What became of one event: its decision, None (the execution is unknown, not to be
continued, or the guard refused: a redelivery), or the error it met."""


@dataclass(frozen=True)
class Continued:
    """One event for an execution: ``event_for(now)`` is decided at ``now``."""

    execution_id: str
    event_for: EventFactory
    guard: Guard | None = None
    causation_id: str = ""
    traced: Callable[[], AbstractContextManager[object]] = nullcontext
    """The span its writes are made in (a fact's consume span: their trace goes on)."""


class _GuardRefused(Exception):
    """The guard of one event said no: its execution's part rolls back."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


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
        continued: ``first_load`` said None) or the guard refused."""
        with structlog.contextvars.bound_contextvars(execution_id=execution_id):

            async def load(tx: ExecutionTransaction) -> list[ExecutionRow | None]:
                if first_load is not None:
                    return [await first_load(tx)]
                row = await tx.executions.load(execution_id)
                if row is None:
                    _log.info("event for an unknown execution ignored", execution_id=execution_id)
                return [row]

            item = Continued(execution_id, event_for, guard, causation_id)
            [applied] = await self.apply_batch([item], load)
            if isinstance(applied, Exception):
                raise applied
            return applied

    async def apply_batch(
        self, items: Sequence[Continued], first_load: BatchLoader
    ) -> list[Applied]:
        """What became of each of ``items`` (in stream order). ``first_load`` reads the
        execution of each item (None: not to be continued) in one read transaction; a
        failure of that read is raised."""
        rows = await self._uow.read(first_load)
        results: list[Applied] = [None] * len(items)
        groups: dict[str, list[int]] = {}  # execution id -> its items, in order
        current: dict[str, ExecutionRow] = {}
        for index, row in enumerate(rows):
            if row is not None:
                groups.setdefault(row.id, []).append(index)
                current[row.id] = row
        definitions: dict[str, PublishedDefinition | Exception] = {}
        attempts = decision_attempts()
        await anext(attempts)
        while groups:
            groups, conflicted = await self._decide_and_write(
                items, groups, current, definitions, results
            )
            if not groups:
                return results
            # Another writer won: pause as the conflict-retry policy says, so many times.
            if conflicted and await anext(attempts, None) is None:
                break
            # (A refused guard drops its event: the rest go again at once; each such
            # round takes one event out, so these rounds are bounded by the batch.)
            current = await self._load_many(list(groups))  # decide on what is saved now
            assert set(groups) <= set(current)  # executions are never deleted
        for execution_id, indexes in groups.items():
            error = ConcurrentUpdate(f"execution {execution_id} kept changing; giving up for now")
            for index in indexes:
                results[index] = error
        return results

    async def _load_many(self, execution_ids: list[str]) -> dict[str, ExecutionRow]:
        async def load(tx: ExecutionTransaction) -> dict[str, ExecutionRow]:
            return await tx.executions.load_many(execution_ids)

        return await self._uow.read(load)

    async def _decide_and_write(
        self,
        items: Sequence[Continued],
        groups: Mapping[str, list[int]],
        rows: Mapping[str, ExecutionRow],
        definitions: dict[str, PublishedDefinition | Exception],
        results: list[Applied],
    ) -> tuple[dict[str, list[int]], bool]:
        """One round: the decisions of ``groups``, written together; the groups to decide
        again (another writer won, or a guard refused one of their events), and whether
        another writer won for one of them."""
        work: list[tuple[str, list[int], PublishedDefinition]] = []
        # Written in the order of their ids: two replicas' batches lock rows in one order
        # (PostgreSQL), so they wait for each other instead of deadlocking.
        for execution_id, indexes in sorted(groups.items()):
            published = await self._definition(rows[execution_id].process_id, definitions)
            if isinstance(published, Exception):  # e.g. the definition service is down
                for index in indexes:
                    results[index] = published
                continue
            work.append((execution_id, indexes, published))
        now = datetime.now(UTC)
        decided = await decide_in_order_off_loop(
            [
                (
                    published.process,
                    rows[execution_id].execution_state(),
                    [items[index].event_for(now) for index in indexes],
                )
                for execution_id, indexes, published in work
            ]
        )
        writes = [
            self._write(items, indexes, rows[execution_id], decisions, now, published)
            for (execution_id, indexes, published), decisions in zip(work, decided, strict=True)
            if not isinstance(decisions, Exception)
        ]
        written = await _each(writes)
        again: dict[str, list[int]] = {}
        conflicted = False
        outcomes = iter(written)
        for (execution_id, indexes, _), decisions in zip(work, decided, strict=True):
            outcome = decisions if isinstance(decisions, Exception) else next(outcomes)
            if isinstance(outcome, ConcurrentUpdate):
                again[execution_id], conflicted = indexes, True
            elif isinstance(outcome, _GuardRefused):
                # A redelivery (or a timer fired elsewhere): the rest are decided again
                # on the execution as it is now.
                rest = [index for index in indexes if index != outcome.index]
                if rest:
                    again[execution_id] = rest
            elif isinstance(outcome, Exception):
                for index in indexes:
                    results[index] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                assert not isinstance(decisions, Exception)
                for index, decision in zip(indexes, decisions, strict=True):
                    results[index] = decision
                    if decision.ignored:
                        _log.debug("event ignored", execution_id=execution_id, why=decision.ignored)
        return again, conflicted

    async def _definition(
        self, process_id: str, known: dict[str, PublishedDefinition | Exception]
    ) -> PublishedDefinition | Exception:
        if process_id not in known:
            try:
                known[process_id] = await self._catalog.by_id(process_id)
            except Exception as error:
                known[process_id] = error
        return known[process_id]

    async def _write(
        self,
        items: Sequence[Continued],
        indexes: list[int],
        row: ExecutionRow,
        decisions: list[d.Decision],
        now: datetime,
        published: PublishedDefinition,
    ) -> None:
        """One execution's decisions, in the next grouped transaction."""
        steps = published.process.steps

        async def write(tx: ExecutionTransaction) -> None:
            at, previous = row, None
            for index, decision in zip(indexes, decisions, strict=True):
                item = items[index]
                with item.traced():
                    if item.guard is not None and not await item.guard(tx):
                        raise _GuardRefused(index)  # roll back whatever the guard did
                    if decision.ignored:
                        continue
                    if previous is not None:
                        at = _after(at, previous)
                    done = await tx.write_decision(
                        at, decision, now, causation_id=item.causation_id
                    )
                self._wakeups.on_commit(tx, done, steps)
                previous = decision
            if previous is None:  # decisions that change nothing hold only on the revision read
                await tx.executions.check_revision(row.id, row.revision)

        with structlog.contextvars.bound_contextvars(execution_id=row.id):
            # Grouped: the batch's executions (and whatever else is handed in meanwhile)
            # share the next commit; one's conflict or refused guard is its own.
            await self._uow.write(write, grouped=True)


async def _each(writes: list[Coroutine[Any, Any, None]]) -> list[BaseException | None]:
    """Runs ``writes`` together (one group commit); what each raised, or None."""
    if len(writes) == 1:  # a batch of one (a timer, a lone fact): no task of its own
        try:
            await writes[0]
        except Exception as error:
            return [error]
        return [None]
    return await asyncio.gather(*writes, return_exceptions=True)


def _after(row: ExecutionRow, decision: d.Decision) -> ExecutionRow:
    """The execution as ``decision`` left it (the next decision of a batch is written on it)."""
    state = decision.state
    return replace(
        row,
        status=str(state.status),
        state=state.header_dict(),
        steps=state.steps,
        revision=row.revision + 1,
        fact_count=row.fact_count + len(decision.facts),
        ended_at=state.ended_at,
    )
