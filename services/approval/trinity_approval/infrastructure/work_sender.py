"""Delivers the notification dispatches to the work service's ``RequestWork``.

Rows are claimed with a lease (``next_attempt_at`` pushed forward; ``SKIP LOCKED`` on
PostgreSQL), so replicas share the load; a row sent twice (a replica died after
sending) is harmless thanks to its idempotency key. Failures are retried with
capped exponential backoff (never sooner than the work service's ``RetryInfo``)
until the work service accepts; refusals no retry can fix
(:func:`~trinity_platform.grpc_errors.is_permanent`) mark the row failed. Finished
rows are pruned after ``retention``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import grpc
from sqlalchemy import RowMapping, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.work.v1 import work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_approval.infrastructure.notifications import DONE, FAILED, PENDING
from trinity_approval.infrastructure.tables import dispatches
from trinity_approval.infrastructure.tasks import raise_if_cancelled
from trinity_platform.db import read_only
from trinity_platform.grpc_errors import is_permanent, retry_delay
from trinity_platform.logs import get_logger

_log = get_logger(__name__)


def backoff_seconds(attempts: int, maximum: float) -> float:
    return float(min(0.2 * 2 ** max(attempts - 1, 0), maximum))


class WorkNotificationSender:
    """Delivers pending dispatches; ``run()`` is a runtime background task."""

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
        self._engine = engine
        self._clock = clock
        self.stub = stub
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._limit = asyncio.Semaphore(concurrency)
        self._call_timeout = call_timeout
        self._max_backoff = max_backoff
        self._lease = timedelta(seconds=lease)
        self._metadata = tuple(metadata)
        self._wake = asyncio.Event()
        self._retention = retention
        self._prune_interval = prune_interval

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Send until cancelled (a runtime background task)."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            raise_if_cancelled()
            try:
                claimed = await self.send_once()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + self._prune_interval
                    await self.prune()
            except Exception:
                _log.exception("notification round failed")
                claimed = 0
            if claimed >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    async def send_once(self) -> int:
        """Claim due rows and send them; returns how many were claimed."""
        rows = await self._claim()
        if rows:
            await asyncio.gather(*(self._send(row) for row in rows))
        return len(rows)

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Delete finished dispatches created before ``now - older_than`` (default:
        the retention); returns how many."""
        cutoff = self._clock() - (self._retention if older_than is None else older_than)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(dispatches).where(
                    dispatches.c.status != PENDING, dispatches.c.created_at < cutoff
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _claim(self) -> list[RowMapping]:
        now = self._clock()
        due = (dispatches.c.status == PENDING, dispatches.c.next_attempt_at <= now)
        async with read_only(self._engine) as conn:  # most rounds find nothing to send
            if await conn.scalar(select(dispatches.c.id).where(*due).limit(1)) is None:
                return []
        async with self._engine.begin() as conn:
            query = (
                select(dispatches)
                .where(*due)
                .order_by(dispatches.c.next_attempt_at, dispatches.c.id)
                .limit(self._batch_size)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list((await conn.execute(query)).mappings().all())
            if rows:
                await conn.execute(
                    update(dispatches)
                    .where(dispatches.c.id.in_([row["id"] for row in rows]))
                    .values(next_attempt_at=now + self._lease)
                )
        return rows

    async def _send(self, row: RowMapping) -> None:
        attempts = int(row["attempts"]) + 1
        request = work_service_pb2.RequestWorkRequest.FromString(bytes(row["payload"]))
        async with self._limit:
            try:
                if self.stub is None:
                    raise RuntimeError("no channel to the work service yet")
                reply = await self.stub.RequestWork(
                    request, timeout=self._call_timeout, metadata=self._metadata or None
                )
            except grpc.aio.AioRpcError as error:
                message = f"{error.code().name}: {error.details()}"
                if is_permanent(error.code()):
                    _log.error("work refused a notification", key=row["key"], error=message)
                    await self._finish(row, attempts, FAILED, error=message)
                else:
                    await self._retry_later(row, attempts, message, retry_delay(error))
                return
            except Exception as error:
                await self._retry_later(row, attempts, repr(error))
                return
        await self._finish(row, attempts, DONE, work_id=reply.work.id)

    async def _finish(
        self,
        row: RowMapping,
        attempts: int,
        status: str,
        *,
        work_id: str | None = None,
        error: str | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(dispatches)
                .where(dispatches.c.id == row["id"], dispatches.c.status == PENDING)
                .values(status=status, attempts=attempts, work_id=work_id, last_error=error)
            )

    async def _retry_later(
        self, row: RowMapping, attempts: int, error: str, at_least: float | None = None
    ) -> None:
        # Never sooner than the work service's RetryInfo asks.
        delay = max(backoff_seconds(attempts, self._max_backoff), at_least or 0.0)
        log = _log.warning if attempts in (1, 10) or attempts % 100 == 0 else _log.debug
        log("notification will be retried", key=row["key"], attempts=attempts, error=error)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(dispatches)
                .where(dispatches.c.id == row["id"], dispatches.c.status == PENDING)
                .values(
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=self._clock() + timedelta(seconds=delay),
                )
            )
