"""RequestApproval and GetApproval over gRPC, with the facts on JetStream."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import grpc
import pytest
from sqlalchemy import update

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity.process.common.v1 import enums_pb2
from trinity_approval.api import translate
from trinity_platform.db import IDEMPOTENCY
from trinity_platform.grpc_errors import error_details


async def test_request_then_get_returns_the_pending_approval(client, facts) -> None:
    requested = (
        await client.request(
            artifacts=[approval_pb2.Artifact(name="notes", reference="s3://notes.md", text="v1")]
        )
    ).approval
    assert requested.id
    assert requested.status == approval_pb2.APPROVAL_STATUS_PENDING
    assert list(requested.approvers) == ["alice@example.com", "bob"]
    assert requested.on_timeout == enums_pb2.TIMEOUT_ACTION_REJECT
    assert requested.deadline.ToDatetime() > requested.create_time.ToDatetime()
    assert (
        requested.deadline.ToDatetime() - requested.create_time.ToDatetime()
    ).total_seconds() == 3600

    got = (await client.get(requested.id)).approval
    assert got == requested

    [(envelope, fact)] = await facts.wait(requested.id, 1)
    assert envelope.type == "trinity.process.approval.v1.ApprovalRequested"
    assert envelope.nats_subject == "trinity.process.approval.facts.v1.ApprovalRequested"
    assert envelope.correlation_id == "exec-1"
    assert (fact.approval_id, fact.execution_id, fact.step_id, fact.iteration) == (
        requested.id,
        "exec-1",
        "review",
        1,
    )
    assert list(fact.approvers) == ["alice@example.com", "bob"]
    assert fact.deadline == requested.deadline
    assert fact.artifacts[0].reference == "s3://notes.md"


async def test_a_retry_with_the_same_request_id_returns_the_first_approval(
    client, service, facts
) -> None:
    first = (await client.request(request_id="same")).approval
    again = (await client.request(request_id="same")).approval
    assert again == first
    assert await facts.published(first.id, service) == ["ApprovalRequested"]


async def test_the_same_request_id_with_another_request_is_refused(client) -> None:
    await client.request(request_id="reused")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.request(request_id="reused", step_id="another-step")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value)[0] == "IDEMPOTENCY_KEY_REUSED"


async def test_get_of_an_unknown_approval_is_not_found(client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.get("no-such-approval")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(missing.value)[0] == "APPROVAL_NOT_FOUND"


async def test_get_without_an_id_is_invalid(client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await client.stub.GetApproval(api.GetApprovalRequest())
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error_details(invalid.value)[1]] == ["approval_id"]


def _fingerprint_before_issue_14(command: object, without: tuple[str, ...]) -> str:
    """How approval fingerprinted a command before the platform's one fingerprint (the
    command's values as JSON, no type name): what keys remembered then carry."""
    values = {k: v for k, v in dataclasses.asdict(command).items() if k not in without}  # type: ignore[call-overload]
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


async def _remembered_as_before_the_upgrade(service, key: str, fingerprint: str) -> None:
    async with service.runtime.engine.begin() as conn:
        changed = await conn.execute(
            update(IDEMPOTENCY)
            .where(IDEMPOTENCY.c.key == key)
            .values(request_fingerprint=fingerprint)
        )
    assert changed.rowcount == 1


async def test_a_retry_spanning_the_upgrade_of_the_fingerprint_returns_the_first_approval(
    client, service, facts
) -> None:
    """A key remembered by the release before (its own fingerprint scheme) still
    answers the same request with the first approval, and still refuses another."""
    first = (await client.request(request_id="across-upgrade")).approval
    request = api.RequestApprovalRequest(
        request_id="across-upgrade",
        execution_id="exec-1",
        step_id="review",
        iteration=1,
        title="Review the release notes",
        approvers=["alice@example.com", "bob"],
        on_timeout=2,
    )
    request.timeout.FromNanoseconds(int(3600 * 1e9))
    legacy = _fingerprint_before_issue_14(translate.request_approval(request), ("request_id",))
    await _remembered_as_before_the_upgrade(service, "across-upgrade", legacy)

    again = (await client.request(request_id="across-upgrade")).approval
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.request(request_id="across-upgrade", step_id="another-step")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value)[0] == "IDEMPOTENCY_KEY_REUSED"
    assert await facts.published(first.id, service) == ["ApprovalRequested"]
