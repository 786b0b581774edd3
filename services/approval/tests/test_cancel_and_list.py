"""CancelApproval, ListPendingApprovals and ListApprovals over gRPC."""

from __future__ import annotations

import grpc
import pytest

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity.process.common.v1 import enums_pb2
from trinity_platform.grpc_errors import error_details

PENDING = approval_pb2.APPROVAL_STATUS_PENDING
CANCELLED = approval_pb2.APPROVAL_STATUS_CANCELLED


async def cancel(
    client, approval_id: str, request_id: str = "", reason: str = "execution cancelled"
):  # type: ignore[no-untyped-def]
    return (
        await client.stub.CancelApproval(
            api.CancelApprovalRequest(request_id=request_id, approval_id=approval_id, reason=reason)
        )
    ).approval


def names(found) -> list[str]:  # type: ignore[no-untyped-def]
    return [envelope.type.rsplit(".", 1)[-1] for envelope, _ in found]


async def test_cancel_a_pending_approval(client, facts) -> None:
    approval = (
        await client.request(on_timeout=enums_pb2.TIMEOUT_ACTION_REJECT, timeout_s=60)
    ).approval
    cancelled = await cancel(client, approval.id, "c-1")
    assert (cancelled.status, cancelled.cancel_reason) == (CANCELLED, "execution cancelled")
    assert await cancel(client, approval.id, "c-1") == cancelled  # retry: first result
    assert (
        await cancel(client, approval.id, "c-2", "again")
    ).cancel_reason == "execution cancelled"

    found = await facts.wait(approval.id, 2)
    assert names(found) == ["ApprovalRequested", "ApprovalCancelled"]
    envelope, fact = found[1]
    assert envelope.correlation_id == "exec-1"
    assert (fact.execution_id, fact.step_id, fact.reason) == (
        "exec-1",
        "review",
        "execution cancelled",
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.decide(approval.id, approval_pb2.DECISION_APPROVE, as_="bob")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value)[0] == "APPROVAL_CANCELLED"


async def test_cancel_of_a_decided_approval_is_refused(client) -> None:
    approval = (await client.request()).approval
    await client.decide(approval.id, approval_pb2.DECISION_REJECT, as_="alice@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cancel(client, approval.id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value)[0] == "APPROVAL_ALREADY_DECIDED"
    assert (await client.get(approval.id)).approval.status == approval_pb2.APPROVAL_STATUS_REJECTED


async def test_cancel_of_an_unknown_approval_is_not_found(client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await cancel(client, "missing")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def list_pending(client, approver: str, page_size: int, page_token: str = ""):  # type: ignore[no-untyped-def]
    return await client.stub.ListPendingApprovals(
        api.ListPendingApprovalsRequest(
            approver=approver, page_size=page_size, page_token=page_token
        )
    )


async def test_pending_approvals_page_by_oldest_deadline_first(client) -> None:
    timeouts = [500, 100, 400, 200, 700, 300, 600]  # seconds, created in this order
    ids = {}
    for index, timeout in enumerate(timeouts):
        approvers = ["Carol@Example.com", "bob"] if index != 3 else ["bob"]
        ids[timeout] = (
            await client.request(request_id=f"p-{index}", approvers=approvers, timeout_s=timeout)
        ).approval.id
    decided = (await client.request(request_id="decided", approvers=["carol@example.com"])).approval
    await client.stub.CancelApproval(api.CancelApprovalRequest(approval_id=decided.id))

    pages, token = [], ""
    while True:
        page = await list_pending(client, "carol@example.com", 2, token)
        pages.append([a.id for a in page.approvals])
        token = page.next_page_token
        if not token:
            break
    expected = [ids[t] for t in sorted(timeouts) if t != 200]  # 200 was not asked of carol
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [i for p in pages for i in p] == expected

    everyone = await list_pending(client, "", 100)
    assert [a.id for a in everyone.approvals] == [ids[t] for t in sorted(timeouts)]
    assert everyone.next_page_token == ""
    assert all(a.status == PENDING for a in everyone.approvals)
    assert (await list_pending(client, "nobody", 10)).approvals == []


async def test_a_page_token_is_bound_to_its_filter(client) -> None:
    for index in range(3):
        await client.request(request_id=f"t-{index}")
    token = (await list_pending(client, "bob", 1)).next_page_token
    assert token
    for approver, bad_token in [("alice@example.com", token), ("bob", "not-a-token")]:
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await list_pending(client, approver, 1, bad_token)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error_details(invalid.value)[1]] == ["page_token"]


async def test_list_the_approvals_of_an_execution(client) -> None:
    created = []
    for index in range(5):
        created.append(
            (
                await client.request(
                    request_id=f"e-{index}", execution_id="exec-A", step_id=f"s{index}"
                )
            ).approval
        )
    await client.request(request_id="elsewhere", execution_id="exec-B")
    await client.decide(created[1].id, approval_pb2.DECISION_APPROVE, as_="bob")

    first = await client.stub.ListApprovals(
        api.ListApprovalsRequest(execution_id="exec-A", page_size=3)
    )
    second = await client.stub.ListApprovals(
        api.ListApprovalsRequest(
            execution_id="exec-A", page_size=3, page_token=first.next_page_token
        )
    )
    assert second.next_page_token == ""
    assert [a.id for a in [*first.approvals, *second.approvals]] == [a.id for a in created]

    approved = await client.stub.ListApprovals(
        api.ListApprovalsRequest(
            execution_id="exec-A", status=approval_pb2.APPROVAL_STATUS_APPROVED
        )
    )
    assert [a.id for a in approved.approvals] == [created[1].id]
    assert approved.approvals[0].decided_by == "bob"
