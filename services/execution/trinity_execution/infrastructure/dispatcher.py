"""Sends the engine's outgoing commands to the work and approval services.

Commands are rows of `dispatches`, written in the same transaction as the
decision that produced them. The dispatcher claims due rows (a short lease
through `next_attempt_at`, SKIP LOCKED on PostgreSQL so replicas share the
load), sends each over gRPC with its idempotency key, and retries with capped
backoff until the receiver accepts (never sooner than its ``RetryInfo``). A
refusal that can never succeed (:func:`~trinity_platform.grpc_errors.is_permanent`:
bad input, a missing resource) is reported back to the execution instead of being
retried forever; every other failure, INTERNAL included, is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_execution.infrastructure.tables import dispatches
from trinity_platform import metrics
from trinity_platform.db import read_only
from trinity_platform.grpc_errors import is_permanent, retry_delay
from trinity_platform.logs import get_logger
from trinity_platform.telemetry import span

_log = get_logger(__name__)

# A sender delivers one payload and returns the id the receiver assigned (work or approval id).
Sender = Callable[[bytes, "DispatchContext"], Awaitable[str]]
# Called with (execution_id, dispatch key, error code, message) when a command is refused for good.
RejectionHandler = Callable[[str, str, str, str], Awaitable[None]]

CLAIM_LEASE = timedelta(seconds=30)
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class DispatchRow:
    id: int
    key: str
    execution_id: str
    kind: str
    payload: bytes
    attempts: int
    target_key: str | None
    traceparent: str | None = None


@dataclass(frozen=True)
class TargetState:
    """The state of the command a cancel refers to."""

    status: str
    result_id: str | None


@dataclass(frozen=True)
class DispatchContext:
    """What a sender may need besides the payload: the row's identity and how to find others."""

    key: str
    execution_id: str
    target_key: str | None
    lookup_target: Callable[[str], Awaitable[TargetState | None]]


class NotYet(Exception):
    """A sender's way to say: try again later (e.g. the command to cancel is still in flight)."""


class PermanentRefusal(Exception):
    """A sender's way to say: never retry this (e.g. nothing left to cancel)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def backoff_seconds(attempts: int) -> float:
    return float(min(0.2 * 2 ** max(attempts - 1, 0), MAX_BACKOFF))


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        senders: Mapping[str, Sender],
        on_rejected: RejectionHandler,
        *,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        concurrency: int = 64,
    ) -> None:
        self._engine = engine
        self._senders = dict(senders)
        self._on_rejected = on_rejected
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._limit = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                sent = await self.dispatch_once()
            except Exception:
                _log.exception("dispatcher round failed")
                sent = 0
            if sent >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    async def dispatch_once(self) -> int:
        """Claim due rows and send them; returns how many were claimed."""
        rows = await self._claim()
        if rows:
            await asyncio.gather(*(self._send(row) for row in rows))
        return len(rows)

    async def _claim(self) -> list[DispatchRow]:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            query = (
                select(dispatches)
                .where(dispatches.c.status == "pending", dispatches.c.next_attempt_at <= now)
                .order_by(dispatches.c.next_attempt_at, dispatches.c.id)
                .limit(self._batch_size)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = [
                DispatchRow(
                    id=r.id,
                    key=r.key,
                    execution_id=r.execution_id,
                    kind=r.kind,
                    payload=bytes(r.payload),
                    attempts=r.attempts,
                    target_key=r.target_key,
                    traceparent=r.traceparent,
                )
                for r in await conn.execute(query)
            ]
            if rows:
                await conn.execute(
                    update(dispatches)
                    .where(dispatches.c.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=now + CLAIM_LEASE)
                )
        return rows

    async def _lookup_target(self, key: str) -> TargetState | None:
        async with read_only(self._engine) as conn:
            found = await conn.execute(
                select(dispatches.c.status, dispatches.c.result_id).where(dispatches.c.key == key)
            )
            row = found.first()
        return None if row is None else TargetState(row.status, row.result_id)

    async def _send(self, row: DispatchRow) -> None:
        with (
            structlog.contextvars.bound_contextvars(
                execution_id=row.execution_id, dispatch_key=row.key
            ),
            span(f"dispatch {row.kind}", row.traceparent),
        ):
            await self._deliver(row)

    async def _deliver(self, row: DispatchRow) -> None:
        attempts = row.attempts + 1
        sender = self._senders.get(row.kind)
        context = DispatchContext(row.key, row.execution_id, row.target_key, self._lookup_target)
        async with self._limit:
            try:
                if sender is None:
                    raise PermanentRefusal("UNKNOWN_COMMAND", f"no sender for {row.kind}")
                result_id = await sender(row.payload, context)
            except NotYet as waiting:
                await self._retry_later(row, attempts, str(waiting))
                return
            except PermanentRefusal as refusal:
                await self._reject(row, attempts, refusal.code, refusal.message)
                return
            except grpc.aio.AioRpcError as error:
                if is_permanent(error.code()):
                    await self._reject(row, attempts, error.code().name, error.details() or "")
                else:
                    await self._retry_later(
                        row,
                        attempts,
                        f"{error.code().name}: {error.details()}",
                        retry_delay(error),
                    )
                return
            except Exception as error:  # a bug or a transport error: keep the command, retry
                _log.exception("dispatch failed", key=row.key)
                await self._retry_later(row, attempts, repr(error))
                return
        async with self._engine.begin() as conn:
            await conn.execute(
                update(dispatches)
                .where(dispatches.c.id == row.id)
                .values(status="done", attempts=attempts, result_id=result_id, last_error=None)
            )
        metrics.DISPATCH_SENT.labels(row.kind, "sent").inc()

    async def _retry_later(
        self, row: DispatchRow, attempts: int, error: str, at_least: float | None = None
    ) -> None:
        delay = max(backoff_seconds(attempts), at_least or 0.0)  # the receiver's RetryInfo
        metrics.DISPATCH_SENT.labels(row.kind, "retry").inc()
        _log.warning("dispatch will be retried", key=row.key, attempts=attempts, error=error)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(dispatches)
                .where(dispatches.c.id == row.id)
                .values(
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay),
                )
            )

    async def _reject(self, row: DispatchRow, attempts: int, code: str, message: str) -> None:
        _log.warning("dispatch refused for good", key=row.key, code=code, error=message)
        metrics.DISPATCH_SENT.labels(row.kind, "rejected").inc()
        async with self._engine.begin() as conn:
            await mark_rejected(conn, row.id, attempts, f"{code}: {message}")
        await self._on_rejected(row.execution_id, row.key, code, message)


async def mark_rejected(conn: AsyncConnection, row_id: int, attempts: int, error: str) -> None:
    await conn.execute(
        update(dispatches)
        .where(dispatches.c.id == row_id)
        .values(status="rejected", attempts=attempts, last_error=error)
    )
