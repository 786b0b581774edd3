"""Delivers the notification dispatches to the work service's ``RequestWork``, through
the platform's command dispatcher (claimed with a lease, sent with their idempotency
key, the due ones together in ``RequestWorkBatch`` calls, retried with capped backoff
until accepted; refusals no retry can fix mark the row failed; finished rows pruned
after the retention).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.work.v1 import work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_approval.infrastructure.notifications import FAILED
from trinity_approval.infrastructure.tables import dispatches
from trinity_platform.dispatch import (
    ONLY_KIND,
    BatchSender,
    CommandDispatcher,
    Dispatch,
    DispatchTable,
    ItemOutcome,
    batch_outcomes,
)
from trinity_platform.work_requests import request_work_batch

NOTIFICATIONS = DispatchTable(
    dispatches,
    aggregate_column="approval_id",
    result_column="work_id",
    refused_status=FAILED,
)


class WorkNotificationSender(CommandDispatcher):
    """Delivers pending notification dispatches; ``run()`` is a runtime background task.
    ``stub`` is set once the channel to the work service is open."""

    def __init__(
        self,
        engine: AsyncEngine,
        stub: WorkServiceStub | None = None,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        concurrency: int = 16,
        call_timeout: float = 10.0,
        max_backoff: float = 30.0,
        lease: float = 60.0,
        metadata: Sequence[tuple[str, str]] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retention: timedelta = timedelta(days=7),
        prune_interval: float = 3600.0,
    ) -> None:
        super().__init__(
            engine,
            NOTIFICATIONS,
            {ONLY_KIND: self._request_work},
            batch_senders={ONLY_KIND: BatchSender(self._request_work_batch)},
            batch_size=batch_size,
            poll_interval=poll_interval,
            concurrency=concurrency,
            lease=timedelta(seconds=lease),
            max_backoff=max_backoff,
            retention=retention,
            prune_interval=prune_interval,
            clock=clock,
        )
        self.stub = stub
        self._call_timeout = call_timeout
        self._metadata = tuple(metadata)

    async def send_once(self) -> int:
        """Claim due rows and send them; returns how many were claimed."""
        return await self.dispatch_once()

    async def _request_work(self, row: Dispatch) -> str:
        if self.stub is None:
            raise RuntimeError("no channel to the work service yet")  # retried
        request = work_service_pb2.RequestWorkRequest.FromString(row.payload)
        reply = await self.stub.RequestWork(
            request, timeout=self._call_timeout, metadata=self._metadata or None
        )
        return str(reply.work.id)

    async def _request_work_batch(self, rows: Sequence[Dispatch]) -> list[ItemOutcome]:
        if self.stub is None:
            raise RuntimeError("no channel to the work service yet")  # retried
        reply = await self.stub.RequestWorkBatch(
            request_work_batch(rows), timeout=self._call_timeout, metadata=self._metadata or None
        )
        return batch_outcomes(reply.results, "work")
