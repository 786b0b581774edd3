"""How each kind of dispatched command reaches its service (the anti-corruption layer).

Payloads are the serialized gRPC requests, built when the decision was made; a
sender only delivers them. Cancels name the command they cancel (`target_key`):
they wait until that command was accepted, then cancel what it created. Work requests
and cancels also have batch senders (RequestWorkBatch, CancelWorkBatch): the dispatcher
sends the due commands of a kind in one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc

from trinity.process.approval.v1 import approval_service_pb2
from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceStub
from trinity.process.work.v1 import work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform.dispatch import (
    BatchSender,
    Dispatch,
    ItemOutcome,
    NotYet,
    PermanentRefusal,
    Sender,
    TargetState,
    batch_outcomes,
    item_refused,
)
from trinity_platform.work_requests import request_work_batch

REQUEST_WORK = "request_work"
REQUEST_APPROVAL = "request_approval"
CANCEL_WORK = "cancel_work"
CANCEL_APPROVAL = "cancel_approval"

CALL_TIMEOUT = 10.0


Lookup = Callable[[str], Awaitable[TargetState | None]]


async def _target_id(row: Dispatch, lookup: Lookup) -> str | None:
    """The id created by the command being cancelled; None when there is nothing to cancel."""
    target_key = row.extra.get("target_key")
    if target_key is None:
        raise PermanentRefusal("NO_TARGET", "cancel without a target command")
    target = await lookup(target_key)
    if target is None or target.status == "rejected":
        return None
    if target.status != "done" or not target.result_id:
        raise NotYet(f"{target_key} not accepted yet")
    return target.result_id


def work_senders(channel: grpc.aio.Channel, lookup: Lookup) -> dict[str, Sender]:
    stub = WorkServiceStub(channel)

    async def request_work(row: Dispatch) -> str:
        request = work_service_pb2.RequestWorkRequest.FromString(row.payload)
        reply = await stub.RequestWork(request, timeout=CALL_TIMEOUT)
        return str(reply.work.id)

    async def cancel_work(row: Dispatch) -> str:
        work_id = await _target_id(row, lookup)
        if work_id is None:
            return ""
        request = work_service_pb2.CancelWorkRequest.FromString(row.payload)
        request.work_id = work_id
        try:
            await stub.CancelWork(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            # Work that finished before the cancel arrived has nothing left to cancel.
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
        return work_id

    return {REQUEST_WORK: request_work, CANCEL_WORK: cancel_work}


def work_batch_senders(channel: grpc.aio.Channel, lookup: Lookup) -> dict[str, BatchSender]:
    stub = WorkServiceStub(channel)

    async def request_work(rows: Sequence[Dispatch]) -> list[ItemOutcome]:
        reply = await stub.RequestWorkBatch(request_work_batch(rows), timeout=CALL_TIMEOUT)
        return batch_outcomes(reply.results, "work")

    async def cancel_work(rows: Sequence[Dispatch]) -> list[ItemOutcome]:
        outcomes: list[ItemOutcome] = [None] * len(rows)
        sent: list[tuple[int, str]] = []  # (row index, work id)
        request = work_service_pb2.CancelWorkBatchRequest()
        targets = await asyncio.gather(
            *(_target_id(row, lookup) for row in rows), return_exceptions=True
        )
        for index, (row, work_id) in enumerate(zip(rows, targets, strict=True)):
            if isinstance(work_id, BaseException):
                if not isinstance(work_id, NotYet | PermanentRefusal):
                    raise work_id
                outcomes[index] = work_id  # waits for its target, or has none
                continue
            if work_id is None:
                outcomes[index] = ""  # nothing to cancel
                continue
            item = request.items.add(traceparent=row.traceparent or "")
            item.request.ParseFromString(row.payload)
            item.request.work_id = work_id
            sent.append((index, work_id))
        if sent:
            reply = await stub.CancelWorkBatch(request, timeout=CALL_TIMEOUT)
            for (index, work_id), result in zip(sent, reply.results, strict=True):
                refused = item_refused(result.error) if result.HasField("error") else None
                # Work that finished before the cancel arrived has nothing left to cancel.
                if refused is None or refused.code == grpc.StatusCode.FAILED_PRECONDITION:
                    outcomes[index] = work_id
                else:
                    outcomes[index] = refused
        return outcomes

    return {REQUEST_WORK: BatchSender(request_work), CANCEL_WORK: BatchSender(cancel_work)}


def approval_senders(channel: grpc.aio.Channel, lookup: Lookup) -> dict[str, Sender]:
    stub = ApprovalServiceStub(channel)

    async def request_approval(row: Dispatch) -> str:
        request = approval_service_pb2.RequestApprovalRequest.FromString(row.payload)
        reply = await stub.RequestApproval(request, timeout=CALL_TIMEOUT)
        return str(reply.approval.id)

    async def cancel_approval(row: Dispatch) -> str:
        approval_id = await _target_id(row, lookup)
        if approval_id is None:
            return ""
        request = approval_service_pb2.CancelApprovalRequest.FromString(row.payload)
        request.approval_id = approval_id
        try:
            await stub.CancelApproval(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
        return approval_id

    return {REQUEST_APPROVAL: request_approval, CANCEL_APPROVAL: cancel_approval}
