"""Command and query handlers. Each command runs in one unit of work: the aggregate
change and its outbox rows commit together (invariant 1); a repeated idempotency key
answers with the work the first request produced (invariant 2)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from trinity_platform.errors import Aborted
from trinity_work.application import commands as c
from trinity_work.application.ports import UnitOfWork, UnitOfWorkFactory, WorkPage
from trinity_work.domain.lease import DEFAULT_MAX_DELIVERIES, DEFAULT_TIMEOUT
from trinity_work.domain.work import WorkRequest

Clock = Callable[[], datetime]
T = TypeVar("T")
_CONFLICT_RETRIES = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


def fingerprint(command: object) -> str:
    """sha256 of the command without its idempotency key (same key, other request → refused)."""
    assert dataclasses.is_dataclass(command) and not isinstance(command, type)
    data = dataclasses.asdict(command)
    data.pop("request_id", None)
    encoded = json.dumps(
        {"type": type(command).__name__, "data": data}, sort_keys=True, default=str
    )
    return hashlib.sha256(encoded.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    lease_expires_at: datetime | None
    cancel_requested: bool


class WorkHandlers:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        clock: Clock = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        default_timeout: timedelta = DEFAULT_TIMEOUT,
        default_max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._new_id = new_id
        self._default_timeout = default_timeout
        self._default_max_deliveries = default_max_deliveries

    # ------------------------------------------------------------------ commands

    async def request_work(self, cmd: c.RequestWork) -> WorkRequest:
        async def body(uow: UnitOfWork) -> WorkRequest:
            work = WorkRequest.request(
                work_id=self._new_id(),
                request_id=cmd.request_id,
                payload=cmd.payload,
                correlation=cmd.correlation,
                timeout=cmd.timeout or self._default_timeout,
                max_deliveries=cmd.max_deliveries or self._default_max_deliveries,
                now=self._clock(),
            )
            await uow.works.add(work)
            return work

        return await self._idempotent("work.RequestWork", cmd.request_id, cmd, body)

    async def record_started(self, cmd: c.RecordWorkStarted) -> WorkRequest:
        async def body(uow: UnitOfWork) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            work.start(cmd.executor_id, cmd.delivery, cmd.lease, self._clock())
            await uow.works.save(work)
            return work

        return await self._idempotent("work.RecordWorkStarted", cmd.request_id, cmd, body)

    async def heartbeat(self, cmd: c.HeartbeatWork) -> Heartbeat:
        async def body(uow: UnitOfWork) -> Heartbeat:
            work = await uow.works.get(cmd.work_id, for_update=True)
            now = self._clock()
            if cmd.release:
                work.release(cmd.executor_id, now)
                await uow.works.save(work)
                return Heartbeat(None, False)
            stop = work.heartbeat(cmd.executor_id, cmd.lease, cmd.progress, now)
            if not stop:
                await uow.works.save(work)
            return Heartbeat(work.lease_expires_at, stop)

        return await self._retrying(body)

    async def record_completed(self, cmd: c.RecordWorkCompleted) -> WorkRequest:
        async def body(uow: UnitOfWork) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            work.complete(cmd.executor_id, cmd.result, self._clock())
            await uow.works.save(work)
            return work

        return await self._idempotent("work.RecordWorkCompleted", cmd.request_id, cmd, body)

    async def record_failed(self, cmd: c.RecordWorkFailed) -> WorkRequest:
        async def body(uow: UnitOfWork) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            work.fail(cmd.executor_id, cmd.failure, self._clock())
            await uow.works.save(work)
            return work

        return await self._idempotent("work.RecordWorkFailed", cmd.request_id, cmd, body)

    async def cancel(self, cmd: c.CancelWork) -> WorkRequest:
        async def body(uow: UnitOfWork) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            if work.cancel(cmd.reason, self._clock()):
                await uow.works.save(work)
            return work

        return await self._idempotent("work.CancelWork", cmd.request_id, cmd, body)

    async def expire_leases(self, limit: int = 100) -> int:
        """Re-offer (or time out) work whose lease ran out; returns how many changed."""

        now = self._clock()
        async with self._uow(read_only=True) as uow:  # the common case: nothing expired
            if not await uow.works.lease_expired(now, 1):
                return 0

        async def body(uow: UnitOfWork) -> int:
            now = self._clock()
            changed = 0
            for work_id in await uow.works.lease_expired(now, limit):
                work = await uow.works.get(work_id, for_update=True)
                if work.expire_lease(now):
                    await uow.works.save(work)
                    changed += 1
            return changed

        return await self._retrying(body)

    # ------------------------------------------------------------------ queries

    async def get(self, work_id: str) -> WorkRequest:
        async with self._uow(read_only=True) as uow:
            return await uow.works.get(work_id)

    async def list(self, query: c.ListWork) -> WorkPage:
        async with self._uow(read_only=True) as uow:
            return await uow.works.list(query)

    # ------------------------------------------------------------------ internals

    async def _idempotent(
        self,
        scope: str,
        key: str,
        cmd: object,
        body: Callable[[UnitOfWork], Awaitable[WorkRequest]],
    ) -> WorkRequest:
        print_ = fingerprint(cmd) if key else ""

        async def once(uow: UnitOfWork) -> WorkRequest:
            if key:
                done = await uow.remembered(scope, key, print_)
                if done is not None:
                    return await uow.works.get(done)
            work = await body(uow)
            if key:
                await uow.remember(scope, key, print_, work.id)
            return work

        return await self._retrying(once)

    async def _retrying(self, body: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run ``body`` in a unit of work; on a write conflict (a concurrent request for
        the same aggregate or key) run it again on fresh state."""
        for attempt in range(_CONFLICT_RETRIES):
            try:
                async with self._uow() as uow:
                    outcome = await body(uow)
                return outcome
            except Aborted:
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover
