"""How each kind of dispatched command reaches its service (the anti-corruption layer).

Payloads are the serialized gRPC requests, built when the decision was made; a
sender only delivers them. Cancels name the command they cancel (`target_key`):
they wait until that command was accepted, then cancel what it created.
"""

from __future__ import annotations

import grpc

from trinity.process.approval.v1 import approval_service_pb2
from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceStub
from trinity.process.work.v1 import work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_execution.infrastructure.dispatcher import (
    DispatchContext,
    NotYet,
    PermanentRefusal,
    Sender,
)

REQUEST_WORK = "request_work"
REQUEST_APPROVAL = "request_approval"
CANCEL_WORK = "cancel_work"
CANCEL_APPROVAL = "cancel_approval"

CALL_TIMEOUT = 10.0


async def _target_id(context: DispatchContext) -> str | None:
    """The id created by the command being cancelled; None when there is nothing to cancel."""
    if context.target_key is None:
        raise PermanentRefusal("NO_TARGET", "cancel without a target command")
    target = await context.lookup_target(context.target_key)
    if target is None or target.status == "rejected":
        return None
    if target.status != "done" or not target.result_id:
        raise NotYet(f"{context.target_key} not accepted yet")
    return target.result_id


def work_senders(channel: grpc.aio.Channel) -> dict[str, Sender]:
    stub = WorkServiceStub(channel)

    async def request_work(payload: bytes, context: DispatchContext) -> str:
        request = work_service_pb2.RequestWorkRequest.FromString(payload)
        reply = await stub.RequestWork(request, timeout=CALL_TIMEOUT)
        return str(reply.work.id)

    async def cancel_work(payload: bytes, context: DispatchContext) -> str:
        work_id = await _target_id(context)
        if work_id is None:
            return ""
        request = work_service_pb2.CancelWorkRequest.FromString(payload)
        request.work_id = work_id
        try:
            await stub.CancelWork(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            # Work that finished before the cancel arrived has nothing left to cancel.
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
        return work_id

    return {REQUEST_WORK: request_work, CANCEL_WORK: cancel_work}


def approval_senders(channel: grpc.aio.Channel) -> dict[str, Sender]:
    stub = ApprovalServiceStub(channel)

    async def request_approval(payload: bytes, context: DispatchContext) -> str:
        request = approval_service_pb2.RequestApprovalRequest.FromString(payload)
        reply = await stub.RequestApproval(request, timeout=CALL_TIMEOUT)
        return str(reply.approval.id)

    async def cancel_approval(payload: bytes, context: DispatchContext) -> str:
        approval_id = await _target_id(context)
        if approval_id is None:
            return ""
        request = approval_service_pb2.CancelApprovalRequest.FromString(payload)
        request.approval_id = approval_id
        try:
            await stub.CancelApproval(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
        return approval_id

    return {REQUEST_APPROVAL: request_approval, CANCEL_APPROVAL: cancel_approval}
