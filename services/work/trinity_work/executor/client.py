"""The executor's side of the work service's write API, with retries.

Every call carries a deterministic idempotency key derived from the work id, the
delivery and the executor, so a retry after a lost answer returns the first result.
Every failure the platform does not classify as permanent
(:func:`trinity_platform.grpc_errors.is_permanent`: UNAVAILABLE, ABORTED,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL from older servers …) is retried
with capped backoff, never sooner than the server's ``RetryInfo`` asks. A finished
result is reported until it is recorded or the service answers that it never will
be (the lease is lost: FAILED_PRECONDITION, NOT_FOUND); those answers are raised as
the platform's error family.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import grpc

from trinity.process.work.v1 import work_pb2, work_service_pb2, work_service_pb2_grpc
from trinity_platform.grpc_errors import is_permanent, retry_delay, to_trinity_error
from trinity_platform.logs import get_logger
from trinity_work import codec as pb
from trinity_work.domain.model import Failure, WorkResult

_log = get_logger(__name__)

R = TypeVar("R")

MAX_BACKOFF = 5.0


class WorkClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        executor_id: str,
        *,
        call_timeout: float = 10.0,
        retry_for: float = 60.0,
    ) -> None:
        self._stub = work_service_pb2_grpc.WorkServiceStub(channel)
        self.executor_id = executor_id
        self._call_timeout = call_timeout
        self._retry_for = retry_for

    async def _call(
        self, name: str, call: Callable[[], Awaitable[R]], retry_for: float | None = None
    ) -> R:
        """``call()`` until it succeeds, fails for good, or ``retry_for`` seconds passed
        (``math.inf``: until it succeeds or fails for good)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._retry_for if retry_for is None else retry_for)
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                wait = max(delay, retry_delay(exc) or 0.0)
                if is_permanent(exc.code()) or loop.time() + wait > deadline:
                    raise to_trinity_error(exc) from None
                log = _log.warning if attempt in (1, 10) or attempt % 100 == 0 else _log.debug
                log(
                    "work service call failed; retrying",
                    call=name,
                    code=exc.code().name,
                    attempt=attempt,
                    retry_in=round(wait, 3),
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, MAX_BACKOFF)

    def _key(self, work_id: str, delivery: int, what: str) -> str:
        return f"{work_id}/{delivery}/{self.executor_id}/{what}"

    async def started(self, work_id: str, delivery: int, lease: float) -> work_pb2.WorkRequest:
        request = work_service_pb2.RecordWorkStartedRequest(
            request_id=self._key(work_id, delivery, "started"),
            work_id=work_id,
            executor_id=self.executor_id,
            delivery=delivery,
            lease_duration=pb.duration(timedelta(seconds=lease)),
        )
        reply = await self._call(
            "RecordWorkStarted",
            lambda: self._stub.RecordWorkStarted(request, timeout=self._call_timeout),
            retry_for=lease,
        )
        return reply.work

    async def heartbeat(
        self, work_id: str, lease: float, progress: str = "", *, release: bool = False
    ) -> work_service_pb2.HeartbeatWorkResponse:
        request = work_service_pb2.HeartbeatWorkRequest(
            work_id=work_id,
            executor_id=self.executor_id,
            lease_duration=pb.duration(timedelta(seconds=lease)),
            progress=progress,
            release=release,
        )
        return await self._call(
            "HeartbeatWork",
            lambda: self._stub.HeartbeatWork(request, timeout=self._call_timeout),
            retry_for=lease / 2,
        )

    async def completed(
        self,
        work_id: str,
        delivery: int,
        result: WorkResult,
        *,
        start: bool = False,
        retry_for: float = math.inf,  # the result is kept until recorded or the lease is lost
    ) -> work_pb2.WorkRequest:
        """Records the result; with ``start``, the start of ``delivery`` in the same call
        (the work ran without a recorded start)."""
        request = work_service_pb2.RecordWorkCompletedRequest(
            request_id=self._key(work_id, delivery, "completed"),
            work_id=work_id,
            executor_id=self.executor_id,
            result=pb.result(result),
        )
        if start:
            request.start.delivery = delivery
        reply = await self._call(
            "RecordWorkCompleted",
            lambda: self._stub.RecordWorkCompleted(request, timeout=self._call_timeout),
            retry_for=retry_for,
        )
        return reply.work

    async def failed(self, work_id: str, delivery: int, failure: Failure) -> work_pb2.WorkRequest:
        request = work_service_pb2.RecordWorkFailedRequest(
            request_id=self._key(work_id, delivery, "failed"),
            work_id=work_id,
            executor_id=self.executor_id,
            error=pb.failure(failure),
        )
        reply = await self._call(
            "RecordWorkFailed",
            lambda: self._stub.RecordWorkFailed(request, timeout=self._call_timeout),
            retry_for=math.inf,
        )
        return reply.work
