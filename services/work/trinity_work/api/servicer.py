"""The WorkService servicer: thin translation around the handlers.

Errors are raised as the platform's error family; the ErrorMappingInterceptor turns
them into status codes with ErrorInfo (and BadRequest for invalid input). A work report's
executor_id is the authenticated executor itself (bound_executor): an executor reports
only as the identity that holds the lease.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from google.rpc import status_pb2

from trinity.process.work.v1 import work_pb2, work_service_pb2_grpc
from trinity.process.work.v1 import work_service_pb2 as api
from trinity_platform.authz import bound_executor
from trinity_platform.batches import answer_each, check_batch_size, check_item
from trinity_platform.pagination import encode_page_token
from trinity_platform.telemetry import span
from trinity_work import codec as pb
from trinity_work.api import translate
from trinity_work.application import commands as c
from trinity_work.application.handlers import WorkHandlers

SERVICE_NAME = api.DESCRIPTOR.services_by_name["WorkService"].full_name


def _item_error(status: status_pb2.Status) -> api.ItemStatus:
    """An item's google.rpc.Status as the contract's ItemStatus (the same wire format)."""
    return api.ItemStatus.FromString(status.SerializeToString())


Result = TypeVar("Result", api.RequestWorkResult, api.CancelWorkResult)


async def _each_item(
    method: str,
    items: Sequence[Any],
    run: Callable[[Any], Awaitable[work_pb2.WorkRequest]],
    result: type[Result],
) -> list[Result]:
    """A batch call's items, each checked and run as its single call is, each answered
    with its work request or its own status (one's refusal is not the others')."""
    check_batch_size(len(items))

    async def one(item: Any) -> work_pb2.WorkRequest:
        with span(f"{method} item", item.traceparent or None):
            check_item(item.request)
            return await run(item.request)

    answers = await answer_each(items, one)
    return [
        result(error=_item_error(answer))
        if isinstance(answer, status_pb2.Status)
        else result(work=answer)
        for answer in answers
    ]


class WorkServicer(work_service_pb2_grpc.WorkServiceServicer):
    def __init__(self, handlers: WorkHandlers) -> None:
        self._handlers = handlers

    async def RequestWork(
        self, request: api.RequestWorkRequest, context: Any
    ) -> api.RequestWorkResponse:
        return api.RequestWorkResponse(work=await self._request_work(request))

    async def RequestWorkBatch(
        self, request: api.RequestWorkBatchRequest, context: Any
    ) -> api.RequestWorkBatchResponse:
        results = await _each_item(
            "RequestWorkBatch", request.items, self._request_work, api.RequestWorkResult
        )
        return api.RequestWorkBatchResponse(results=results)

    async def _request_work(self, request: api.RequestWorkRequest) -> work_pb2.WorkRequest:
        (timeout,) = translate.request_work(request)
        work = await self._handlers.request_work(
            c.RequestWork(
                request_id=request.request_id,
                payload=pb.from_payload(request.payload),
                correlation=pb.from_step_ref(request.correlation),
                timeout=timeout,
                max_deliveries=request.max_deliveries or None,
            )
        )
        return pb.work_request(work)

    async def RecordWorkStarted(
        self, request: api.RecordWorkStartedRequest, context: Any
    ) -> api.RecordWorkStartedResponse:
        lease = translate.record_started(request)
        work = await self._handlers.record_started(
            c.RecordWorkStarted(
                request_id=request.request_id,
                work_id=request.work_id,
                executor_id=bound_executor(request.executor_id),
                delivery=request.delivery,
                lease=lease,
            )
        )
        return api.RecordWorkStartedResponse(work=pb.work_request(work))

    async def HeartbeatWork(
        self, request: api.HeartbeatWorkRequest, context: Any
    ) -> api.HeartbeatWorkResponse:
        lease = translate.heartbeat(request)
        beat = await self._handlers.heartbeat(
            c.HeartbeatWork(
                work_id=request.work_id,
                executor_id=bound_executor(request.executor_id),
                lease=lease,
                progress=request.progress,
                release=request.release,
            )
        )
        response = api.HeartbeatWorkResponse(cancel_requested=beat.cancel_requested)
        if beat.lease_expires_at is not None:
            response.lease_expire_time.CopyFrom(pb.timestamp(beat.lease_expires_at))
        return response

    async def RecordWorkCompleted(
        self, request: api.RecordWorkCompletedRequest, context: Any
    ) -> api.RecordWorkCompletedResponse:
        translate.record_completed(request)
        work = await self._handlers.record_completed(
            c.RecordWorkCompleted(
                request_id=request.request_id,
                work_id=request.work_id,
                executor_id=bound_executor(request.executor_id),
                result=pb.from_result(request.result),
                started_delivery=request.start.delivery if request.HasField("start") else None,
            )
        )
        return api.RecordWorkCompletedResponse(work=pb.work_request(work))

    async def RecordWorkFailed(
        self, request: api.RecordWorkFailedRequest, context: Any
    ) -> api.RecordWorkFailedResponse:
        translate.record_failed(request)
        work = await self._handlers.record_failed(
            c.RecordWorkFailed(
                request_id=request.request_id,
                work_id=request.work_id,
                executor_id=bound_executor(request.executor_id),
                failure=pb.from_failure(request.error),
            )
        )
        return api.RecordWorkFailedResponse(work=pb.work_request(work))

    async def CancelWork(
        self, request: api.CancelWorkRequest, context: Any
    ) -> api.CancelWorkResponse:
        return api.CancelWorkResponse(work=await self._cancel(request))

    async def CancelWorkBatch(
        self, request: api.CancelWorkBatchRequest, context: Any
    ) -> api.CancelWorkBatchResponse:
        results = await _each_item(
            "CancelWorkBatch", request.items, self._cancel, api.CancelWorkResult
        )
        return api.CancelWorkBatchResponse(results=results)

    async def _cancel(self, request: api.CancelWorkRequest) -> work_pb2.WorkRequest:
        translate.cancel(request)
        work = await self._handlers.cancel(
            c.CancelWork(
                request_id=request.request_id, work_id=request.work_id, reason=request.reason
            )
        )
        return pb.work_request(work)

    async def GetWork(self, request: api.GetWorkRequest, context: Any) -> api.GetWorkResponse:
        translate.get(request)
        work = await self._handlers.get(request.work_id)
        return api.GetWorkResponse(work=pb.work_request(work))

    async def ListWork(self, request: api.ListWorkRequest, context: Any) -> api.ListWorkResponse:
        page_request = translate.list_work(request)
        after = page_request.after
        page = await self._handlers.list(
            c.ListWork(
                execution_id=request.execution_id,
                status=pb.STATUS_FROM_PROTO.get(request.status),
                kind=pb.KIND_FROM_PROTO.get(request.kind),
                page_size=page_request.size,
                after=(str(after[0]), str(after[1])) if after else None,
            )
        )
        token = ""
        if page.has_more and page.items:
            last = page.items[-1]
            token = encode_page_token(
                (last.created_at.isoformat(), last.id), translate.list_filters(request)
            )
        return api.ListWorkResponse(
            work=[pb.work_request(w) for w in page.items], next_page_token=token
        )
