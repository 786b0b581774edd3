"""Command and query handlers. Each command runs in one unit of work: the aggregate
change and its outbox rows commit together (invariant 1); a repeated idempotency key
answers with the work the first request produced (invariant 2)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from trinity_platform.unit_of_work import Idempotency, fingerprint
from trinity_work.application import commands as c
from trinity_work.application.ports import WorkPage, WorkTransaction, WorkUnitOfWork
from trinity_work.domain.lease import DEFAULT_MAX_DELIVERIES, DEFAULT_TIMEOUT
from trinity_work.domain.work import WorkRequest

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _load(tx: WorkTransaction, work_id: str) -> WorkRequest:
    return await tx.works.get(work_id)


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    lease_expires_at: datetime | None
    cancel_requested: bool


class WorkHandlers:
    def __init__(
        self,
        uow: WorkUnitOfWork,
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
        async def body(uow: WorkTransaction) -> WorkRequest:
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
        async def body(uow: WorkTransaction) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            work.start(cmd.executor_id, cmd.delivery, cmd.lease, self._clock())
            await uow.works.save(work)
            return work

        return await self._idempotent("work.RecordWorkStarted", cmd.request_id, cmd, body)

    async def heartbeat(self, cmd: c.HeartbeatWork) -> Heartbeat:
        async def body(uow: WorkTransaction) -> Heartbeat:
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

        return await self._uow.write(body)

    async def record_completed(self, cmd: c.RecordWorkCompleted) -> WorkRequest:
        async def body(uow: WorkTransaction) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            now = self._clock()
            if cmd.started_delivery is not None:  # ran within its first heartbeat interval
                work.start(cmd.executor_id, cmd.started_delivery, None, now)
            work.complete(cmd.executor_id, cmd.result, now)
            await uow.works.save(work)
            return work

        return await self._idempotent("work.RecordWorkCompleted", cmd.request_id, cmd, body)

    async def record_failed(self, cmd: c.RecordWorkFailed) -> WorkRequest:
        async def body(uow: WorkTransaction) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            work.fail(cmd.executor_id, cmd.failure, self._clock())
            await uow.works.save(work)
            return work

        return await self._idempotent("work.RecordWorkFailed", cmd.request_id, cmd, body)

    async def cancel(self, cmd: c.CancelWork) -> WorkRequest:
        async def body(uow: WorkTransaction) -> WorkRequest:
            work = await uow.works.get(cmd.work_id, for_update=True)
            if work.cancel(cmd.reason, self._clock()):
                await uow.works.save(work)
            return work

        return await self._idempotent("work.CancelWork", cmd.request_id, cmd, body)

    async def expire_leases(self, limit: int = 100) -> int:
        """Re-offer (or time out) work whose lease ran out; returns how many changed."""

        now = self._clock()

        async def any_expired(uow: WorkTransaction) -> bool:
            return bool(await uow.works.lease_expired(now, 1))

        if not await self._uow.read(any_expired):  # the common case: nothing expired
            return 0

        async def body(uow: WorkTransaction) -> int:
            now = self._clock()
            changed = 0
            for work_id in await uow.works.lease_expired(now, limit):
                work = await uow.works.get(work_id, for_update=True)
                if work.expire_lease(now):
                    await uow.works.save(work)
                    changed += 1
            return changed

        return await self._uow.write(body)

    # ------------------------------------------------------------------ queries

    async def get(self, work_id: str) -> WorkRequest:
        return await self._uow.read(lambda uow: _load(uow, work_id))

    async def list(self, query: c.ListWork) -> WorkPage:
        return await self._uow.read(lambda uow: uow.works.list(query))

    # ------------------------------------------------------------------ internals

    async def _idempotent(
        self,
        scope: str,
        key: str,
        cmd: object,
        body: Callable[[WorkTransaction], Awaitable[WorkRequest]],
    ) -> WorkRequest:
        """``body`` once per key: a repeated key answers the work it produced. Grouped:
        the commands handed in while one commits share the next transaction. The keys
        are nearly always new (the dispatcher's and the executors' first requests): the
        key is looked up only when remembering it finds it taken or the body refuses."""
        return await self._uow.write(
            body,
            grouped=True,
            idempotency=Idempotency.by_reference(
                scope,
                key,
                fingerprint(cmd) if key else "",
                reference=lambda work: work.id,
                load=_load,
                look_up_first=False,
            ),
        )
