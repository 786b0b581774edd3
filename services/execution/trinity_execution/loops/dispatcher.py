"""The engine's outgoing commands (work and approval requests, their cancels), sent by
the platform's command dispatcher from the ``dispatches`` rows each decision writes.

A command refused for good (bad input, a missing resource) is reported back to its
execution as a CommandRejected event instead of being retried forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_execution.infrastructure.tables import dispatches
from trinity_platform.dispatch import (
    BatchSender,
    CommandDispatcher,
    Dispatch,
    DispatchTable,
    Sender,
)

DISPATCHES = DispatchTable(
    dispatches,
    aggregate_column="execution_id",
    result_column="result_id",
    kind_column="kind",
    traceparent_column="traceparent",
    extra_columns=("target_key",),
)

# Called with (execution_id, dispatch key, error code, message) when a command is refused.
RejectionHandler = Callable[[str, str, str, str], Awaitable[None]]


def execution_dispatcher(
    engine: AsyncEngine,
    senders: Mapping[str, Sender],
    on_rejected: RejectionHandler,
    batch_senders: Mapping[str, BatchSender] | None = None,
) -> CommandDispatcher:
    async def refused(row: Dispatch, code: str, message: str) -> None:
        await on_rejected(row.aggregate_id, row.key, code, message)

    return CommandDispatcher(engine, DISPATCHES, senders, refused, batch_senders=batch_senders)
