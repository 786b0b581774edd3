"""SubmitDecision over gRPC: only an authenticated, listed approver decides, once."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity_platform.grpc_errors import error_details

APPROVE = approval_pb2.DECISION_APPROVE
REJECT = approval_pb2.DECISION_REJECT
CHANGES = approval_pb2.DECISION_REQUEST_CHANGES


async def refused(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def test_an_approver_decides_and_the_facts_follow(client, facts) -> None:
    approval = (await client.request()).approval
    decided = (
        await client.decide(
            approval.id, CHANGES, as_="bob", request_id="d-1", comment="fix the typo"
        )
    ).approval
    assert decided.status == approval_pb2.APPROVAL_STATUS_NEEDS_CHANGES
    assert decided.decision == CHANGES
    assert decided.decided_by == "bob"  # the token's principal, not a request field
    assert decided.comment == "fix the typo"
    assert decided.HasField("decide_time")
    assert (await client.get(approval.id)).approval == decided

    found = await facts.wait(approval.id, 2)
    assert [e.type.rsplit(".", 1)[-1] for e, _ in found] == ["ApprovalRequested", "ApprovalDecided"]
    envelope, fact = found[1]
    assert envelope.correlation_id == "exec-1"
    assert (fact.approval_id, fact.execution_id, fact.step_id, fact.iteration) == (
        approval.id,
        "exec-1",
        "review",
        1,
    )
    assert (fact.decision, fact.decided_by, fact.comment) == (CHANGES, "bob", "fix the typo")


async def test_a_caller_without_a_token_is_unauthenticated(client) -> None:
    approval = (await client.request()).approval
    error = await refused(client.decide(approval.id, APPROVE, as_=None))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(error)[0] == "AUTHENTICATION_REQUIRED"


async def test_an_unknown_token_is_unauthenticated(client) -> None:
    approval = (await client.request()).approval
    error = await refused(
        client.stub.SubmitDecision(
            api.SubmitDecisionRequest(approval_id=approval.id, decision=APPROVE),
            metadata=(("authorization", "Bearer forged"),),
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await client.get(approval.id)).approval.status == approval_pb2.APPROVAL_STATUS_PENDING


async def test_a_non_approver_is_denied_and_nothing_changes(client, service, facts) -> None:
    approval = (await client.request()).approval
    error = await refused(client.decide(approval.id, APPROVE, as_="mallory@example.com"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error)[0] == "NOT_AN_APPROVER"
    assert (await client.get(approval.id)).approval == approval
    assert await facts.published(approval.id, service) == ["ApprovalRequested"]


async def test_a_repeated_decision_with_the_same_key_returns_the_first_result(
    client, service, facts
) -> None:
    approval = (await client.request()).approval
    first = (
        await client.decide(approval.id, APPROVE, as_="alice@example.com", request_id="k")
    ).approval
    again = (
        await client.decide(approval.id, APPROVE, as_="alice@example.com", request_id="k")
    ).approval
    assert again == first
    assert await facts.published(approval.id, service) == ["ApprovalRequested", "ApprovalDecided"]


async def test_a_second_decision_is_refused(client) -> None:
    approval = (await client.request()).approval
    await client.decide(approval.id, APPROVE, as_="alice@example.com", request_id="k1")

    other_decision = await refused(
        client.decide(approval.id, REJECT, as_="alice@example.com", request_id="k2")
    )
    assert other_decision.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(other_decision)[0] == "APPROVAL_ALREADY_DECIDED"

    same_key_other_decision = await refused(
        client.decide(approval.id, REJECT, as_="alice@example.com", request_id="k1")
    )
    assert same_key_other_decision.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(same_key_other_decision)[0] == "IDEMPOTENCY_KEY_REUSED"

    # Another approver reusing the first key gets neither the first result nor a decision.
    other_approver = await refused(client.decide(approval.id, APPROVE, as_="bob", request_id="k1"))
    assert other_approver.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(other_approver)[0] == "APPROVAL_ALREADY_DECIDED"

    final = (await client.get(approval.id)).approval
    assert (final.status, final.decided_by) == (
        approval_pb2.APPROVAL_STATUS_APPROVED,
        "alice@example.com",
    )


async def test_two_approvers_deciding_at_once_give_one_decision(client, service, facts) -> None:
    approval = (await client.request()).approval
    results = await asyncio.gather(
        client.decide(approval.id, APPROVE, as_="alice@example.com", request_id="a"),
        client.decide(approval.id, REJECT, as_="bob", request_id="b"),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    final = (await client.get(approval.id)).approval
    assert final.decided_by == winners[0].approval.decided_by
    assert await facts.published(approval.id, service) == ["ApprovalRequested", "ApprovalDecided"]


async def test_deciding_an_unknown_approval_is_not_found(client) -> None:
    error = await refused(client.decide("missing", APPROVE, as_="bob"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(error)[0] == "APPROVAL_NOT_FOUND"


async def test_only_listed_requesters_may_request_and_cancel(make_service, connect) -> None:
    service = await make_service(requesters=frozenset({"service:execution"}))
    async with connect(service) as client:
        anonymous = await refused(client.bare.RequestApproval(api.RequestApprovalRequest()))
        assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
        user = await refused(
            client.stub.RequestApproval(
                api.RequestApprovalRequest(request_id="x"), metadata=client.token("bob")
            )
        )
        assert user.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(user)[0] == "PERMISSION_REQUIRED"  # not a service at all
        other = await refused(
            client.stub.RequestApproval(
                api.RequestApprovalRequest(request_id="x"), metadata=client.token("service:other")
            )
        )
        assert other.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(other)[0] == "NOT_A_REQUESTER"  # a service, but not a requester

        executor = client.token("service:execution")
        request = api.RequestApprovalRequest(
            request_id="ok", execution_id="e", step_id="s", approvers=["bob"]
        )
        request.timeout.FromSeconds(60)
        approval = (await client.stub.RequestApproval(request, metadata=executor)).approval
        denied = await refused(
            client.stub.CancelApproval(
                api.CancelApprovalRequest(approval_id=approval.id), metadata=client.token("bob")
            )
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        cancelled = await client.stub.CancelApproval(
            api.CancelApprovalRequest(approval_id=approval.id), metadata=executor
        )
        assert cancelled.approval.status == approval_pb2.APPROVAL_STATUS_CANCELLED
