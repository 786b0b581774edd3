"""Decisions are made off the event loop (invariant 8).

A decision renders the definition's templates and evaluates its conditions. The
sandbox bounds that work (operations, sizes, a deadline per render), and running
it in a worker thread keeps the service's event loop, its health answers, timers
and other executions, responsive meanwhile. The decision is made on a state read
before the write transaction opens, so no transaction (nor SQLite's single writer)
waits for a render; the write then checks the revision it decided on
(optimistic concurrency) and the caller decides again when another writer won, as
often and with the pauses of the platform's one conflict-retry policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from trinity_execution import domain as d
from trinity_platform.unit_of_work import CONFLICT_RETRY


async def decide_off_loop(
    process: d.CompiledProcess, state: d.ExecutionState | None, event: d.Event
) -> d.Decision:
    return await asyncio.to_thread(d.decide, process, state, event)


def _decide_in_order(
    process: d.CompiledProcess, state: d.ExecutionState, events: Sequence[d.Event]
) -> list[d.Decision]:
    """The events one after the other, each on the state the one before left."""
    current = state
    decisions = []
    for event in events:
        decision = d.decide(process, current, event)
        decisions.append(decision)
        current = decision.state
    return decisions


def _decide_all(
    work: Sequence[tuple[d.CompiledProcess, d.ExecutionState, Sequence[d.Event]]],
) -> list[list[d.Decision] | Exception]:
    decided: list[list[d.Decision] | Exception] = []
    for process, state, events in work:
        try:
            decided.append(_decide_in_order(process, state, events))
        except Exception as error:  # this execution's alone (a bug): the others go on
            decided.append(error)
    return decided


async def decide_in_order_off_loop(
    work: Sequence[tuple[d.CompiledProcess, d.ExecutionState, Sequence[d.Event]]],
) -> list[list[d.Decision] | Exception]:
    """For each (process, state as loaded, events) of ``work``: the decisions of its
    events made in order on its evolving state, or the error that met; in one
    worker-thread hop for the whole batch (each render still bounded by the sandbox, each
    step decoded there as read)."""
    if not work:
        return []
    return await asyncio.to_thread(_decide_all, work)


async def decision_attempts() -> AsyncIterator[int]:
    """The attempts at a decision that may lose to another writer (ConcurrentUpdate):
    the platform's conflict-retry policy, with its jittered pause before each retry."""
    for attempt in range(CONFLICT_RETRY.attempts):
        if attempt:
            await asyncio.sleep(CONFLICT_RETRY.delay(attempt - 1))
        yield attempt
