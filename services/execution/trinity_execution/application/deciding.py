"""Decisions are made off the event loop (invariant 8).

A decision renders the definition's templates and evaluates its conditions. The
sandbox bounds that work (operations, sizes, a deadline per render), and running
it in a worker thread keeps the service's event loop, its health answers, timers
and other executions, responsive meanwhile. The decision is made on a state read
before the write transaction opens, so no transaction (nor SQLite's single writer)
waits for a render; the write then checks the revision it decided on
(optimistic concurrency) and the caller decides again when another writer won.
"""

from __future__ import annotations

import asyncio

from trinity_execution import domain as d


async def decide_off_loop(
    process: d.CompiledProcess, state: d.ExecutionState | None, event: d.Event
) -> d.Decision:
    return await asyncio.to_thread(d.decide, process, state, event)
