"""Bad input is answered with INVALID_ARGUMENT and field violations, never INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity_platform.grpc_errors import error_details


def request(**changes: object) -> api.RequestApprovalRequest:
    values: dict[str, object] = {
        "request_id": "r",
        "execution_id": "exec-1",
        "step_id": "review",
        "approvers": ["alice@example.com"],
        "timeout": {"seconds": 60},
    }
    values.update(changes)
    return api.RequestApprovalRequest(**values)  # type: ignore[arg-type]


REQUESTS = [
    (request(request_id=""), {"request_id"}),
    (request(execution_id="", step_id=""), {"execution_id", "step_id"}),
    (request(approvers=[]), {"approvers"}),
    (request(approvers=["a", " ", "A"]), {"approvers[1]", "approvers[2]"}),
    (request(approvers=["system:timeout"]), {"approvers[0]"}),
    (request(approvers=["x" * 300]), {"approvers[0]"}),
    (request(timeout=None), {"timeout"}),
    (request(timeout={"seconds": 0}), {"timeout"}),
    (request(timeout={"seconds": -5}), {"timeout"}),
    (request(timeout={"seconds": 10**11}), {"timeout"}),
    (request(on_timeout=42), {"on_timeout"}),
    (request(reminder_interval={"seconds": -1}), {"reminder_interval"}),
    (request(max_reminders=1000), {"max_reminders"}),
    (request(artifacts=[approval_pb2.Artifact()]), {"artifacts[0]"}),
    (request(execution_id="e" * 65, title="t" * 1001), {"execution_id", "title"}),
    (
        request(
            request_id="r\x00",
            execution_id="e\x00",
            step_id="s\x00",
            title="t\x00",
            approvers=["a\x00"],
            artifacts=[approval_pb2.Artifact(name="n\x00", reference="r\x00", text="t\x00")],
        ),
        {
            "request_id",
            "execution_id",
            "step_id",
            "title",
            "approvers[0]",
            "artifacts[0].name",
            "artifacts[0].reference",
            "artifacts[0].text",
        },
    ),
]


async def test_request_approval_with_bad_input(client) -> None:  # type: ignore[no-untyped-def]
    for message, fields in REQUESTS:
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await client.stub.RequestApproval(message)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        reason, violations = error_details(invalid.value)
        assert reason == "INVALID_ARGUMENT"
        assert {v.field for v in violations} == fields, message
        assert all(v.description for v in violations)
    # Nothing was created by any of them.
    pending = await client.stub.ListPendingApprovals(api.ListPendingApprovalsRequest())
    assert pending.approvals == []


OTHER_REQUESTS = [
    ("SubmitDecision", api.SubmitDecisionRequest(), {"approval_id", "decision"}),
    ("SubmitDecision", api.SubmitDecisionRequest(approval_id="a", decision=9), {"decision"}),
    (
        "SubmitDecision",
        api.SubmitDecisionRequest(approval_id="a", decision=1, comment="c" * 10_001),
        {"comment"},
    ),
    ("CancelApproval", api.CancelApprovalRequest(), {"approval_id"}),
    (
        "CancelApproval",
        api.CancelApprovalRequest(request_id="\x00", approval_id="\x00", reason="\x00"),
        {"request_id", "approval_id", "reason"},
    ),
    (
        "SubmitDecision",
        api.SubmitDecisionRequest(approval_id="a\x00", decision=1, comment="\x00"),
        {"approval_id", "comment"},
    ),
    ("ListPendingApprovals", api.ListPendingApprovalsRequest(approver="b\x00"), {"approver"}),
    ("ListApprovals", api.ListApprovalsRequest(execution_id="\x00"), {"execution_id"}),
    ("GetApproval", api.GetApprovalRequest(approval_id="x" * 65), {"approval_id"}),
    ("ListPendingApprovals", api.ListPendingApprovalsRequest(page_size=-1), {"page_size"}),
    ("ListApprovals", api.ListApprovalsRequest(), {"execution_id"}),
    ("ListApprovals", api.ListApprovalsRequest(execution_id="e", status=77), {"status"}),
    (
        "ListApprovals",
        api.ListApprovalsRequest(execution_id="e", page_token="%%%"),
        {"page_token"},
    ),
]


async def test_other_rpcs_with_bad_input(client) -> None:  # type: ignore[no-untyped-def]
    for method, message, fields in OTHER_REQUESTS:
        metadata = client.token("bob") if method == "SubmitDecision" else None
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await getattr(client.stub, method)(message, metadata=metadata)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, message)
        assert {v.field for v in error_details(invalid.value)[1]} == fields, (method, message)
