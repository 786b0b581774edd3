"""Deny by default, service and executor identities, "who did this" from the principal
(issue 13 §2 §3, issue 18 §5), through the real suite with authentication on everywhere.

The suite's own processes carry their own tokens (LocalSuite): each service calls the
others as ``service:<name>``, the executor reports as ``executor:local-0``. The approval
service accepts requests only from ``service:execution`` (the README's hardening setting).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.common.v1 import types_pb2
from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1 import facts_pb2 as execution_facts
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity_cli.local_suite import LocalSuite
from trinity_platform.grpc_errors import error_details
from trinity_process_model.authoring import parse_process
from trinity_process_model.proto_codec import spec_to_proto

pytestmark = pytest.mark.e2e

EXECUTOR_CONFIG = """
agents:
  worker:
    backend: script
    file: replies.yaml
"""

EXECUTOR_FILES = {
    "replies.yaml": """
replies:
  - match: "slow"
    delay: 60s
    output: "slow done"
  - match: "broken"
    fail: {code: TOOL_FAILED, message: "always fails"}
  - output: "done: {message}"
"""
}

HUMAN_ROLES = ("admin", "author", "operator", "viewer", "approver")
TOKENS = {f"{role}-token": f"{role}@example.com:{role}" for role in HUMAN_ROLES} | {
    # identities of the same kinds as the suite's own, but not the suite's
    "service-token": "service:rogue:service",
    "executor-token": "executor:rogue:executor",
}
EXTRA_ENV = {"TRINITY_APPROVAL_REQUESTERS": "service:execution"}

# The documented matrix (README "Authorization"), written out independently of the code:
# RPC → the roles that may call it.
AUTHORS = {"admin", "author"}
DEFINITION_READERS = {"admin", "author", "viewer", "service"}
OPERATORS = {"admin", "operator"}
READERS = {"admin", "viewer"}
MATRIX: dict[str, dict[str, set[str]]] = {
    "trinity.process.definition.v1.DefinitionService": {
        "CreateDraft": AUTHORS,
        "UpdateDraft": AUTHORS,
        "ValidateDefinition": AUTHORS,
        "PublishDefinition": AUTHORS,
        "ArchiveDefinition": AUTHORS,
        "GetDefinition": DEFINITION_READERS,
        "ListDefinitions": DEFINITION_READERS,
        "ListDefinitionVersions": DEFINITION_READERS,
    },
    "trinity.process.execution.v1.ExecutionService": {
        "TriggerProcess": OPERATORS,
        "CancelExecution": OPERATORS,
        "PauseExecution": OPERATORS,
        "ResumeExecution": OPERATORS,
        "RetryExecution": OPERATORS,
        "SignalExecution": OPERATORS,
        "MigrateExecution": {"admin"},
        "GetExecution": READERS,
        "ListExecutions": READERS,
        "WatchExecution": READERS,
    },
    "trinity.process.approval.v1.ApprovalService": {
        "RequestApproval": {"service"},
        "SubmitDecision": {"admin", "approver"},
        "GetApproval": {"admin", "viewer", "approver"},
        "ListPendingApprovals": {"admin", "viewer", "approver"},
        "ListApprovals": {"admin", "viewer", "approver"},
        "CancelApproval": {"service"},
    },
    "trinity.process.work.v1.WorkService": {
        "RequestWork": {"service"},
        "RequestWorkBatch": {"service"},
        "RecordWorkStarted": {"executor"},
        "HeartbeatWork": {"executor"},
        "RecordWorkCompleted": {"executor"},
        "RecordWorkFailed": {"executor"},
        "CancelWork": {"service"},
        "CancelWorkBatch": {"service"},
        "GetWork": READERS,
        "ListWork": READERS,
    },
}
SERVICE_OF = {
    "trinity.process.definition.v1.DefinitionService": "definition",
    "trinity.process.execution.v1.ExecutionService": "execution",
    "trinity.process.approval.v1.ApprovalService": "approval",
    "trinity.process.work.v1.WorkService": "work",
}
ALL_ROLES = (*HUMAN_ROLES, "service", "executor")


@pytest.fixture(scope="module")
def module_suite(sqlite_module_suite: tuple[LocalSuite, Any]) -> tuple[LocalSuite, Any]:
    """SQLite only: what is checked here does not depend on the database."""
    return sqlite_module_suite


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def refusal(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error_details(error)[0]


async def call(
    channel: grpc.aio.Channel, service: str, method: str, metadata: Any
) -> tuple[grpc.StatusCode, str]:
    """Call ``method`` with an empty request; (code, reason) of the answer."""
    described = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    request_class = message_factory.GetMessageClass(described.input_type)
    response_class = message_factory.GetMessageClass(described.output_type)
    path = f"/{service}/{method}"
    try:
        if described.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request_class(), metadata=metadata, timeout=10)
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request_class(), metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return refusal(error)
    return grpc.StatusCode.OK, ""


async def test_every_rpc_by_every_role_follows_the_matrix(api: Any) -> None:
    # bare channels: the client's own add the suite's admin token
    channels = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        for name, port in api.suite.ports.items()
    }
    checked = 0
    wrong: list[str] = []
    for service, methods in MATRIX.items():
        channel = channels[SERVICE_OF[service]]
        described = descriptor_pool.Default().FindServiceByName(service)
        assert set(methods) == {m.name for m in described.methods}, "the matrix misses an RPC"
        for method, allowed in methods.items():
            anonymous = await call(channel, service, method, metadata=())
            if anonymous != (grpc.StatusCode.UNAUTHENTICATED, "AUTHENTICATION_REQUIRED"):
                wrong.append(f"{method} anonymous: {anonymous}")
            forged = await call(channel, service, method, metadata=bearer("no-such-token"))
            if forged != (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"):
                wrong.append(f"{method} unknown token: {forged}")
            for role in ALL_ROLES:
                code, reason = await call(channel, service, method, bearer(f"{role}-token"))
                denied = (code, reason) == (
                    grpc.StatusCode.PERMISSION_DENIED,
                    "PERMISSION_REQUIRED",
                )
                if denied == (role in allowed) or code == grpc.StatusCode.UNAUTHENTICATED:
                    wrong.append(f"{method} as {role}: {code.name} {reason}")
                checked += 1
    for channel in channels.values():
        await channel.close()
    assert not wrong, "\n".join(wrong)
    assert checked == 34 * len(ALL_ROLES)


PROCESS = """
name: {name}
steps:
  - id: draft
    agent_task: {{agent: worker, message: "{message}"}}
  - id: review
    depends_on: [draft]
    human_approval: {{approvers: [approver@example.com], title: "Review"}}
    timeout: 1h
  - id: ship
    depends_on: [review]
    agent_task: {{agent: worker, message: "ship it"}}
"""


async def publish(api: Any, name: str, message: str) -> None:
    author = bearer("author-token")
    spec = spec_to_proto(parse_process(PROCESS.format(name=name, message=message)))
    draft = await api.definitions.CreateDraft(
        definition_service_pb2.CreateDraftRequest(request_id=api.key(), spec=spec),
        metadata=author,
    )
    assert draft.definition.created_by == "author@example.com"
    await api.definitions.PublishDefinition(
        definition_service_pb2.PublishDefinitionRequest(
            request_id=api.key(), definition_id=draft.definition.id
        ),
        metadata=author,
    )


async def test_an_approval_is_created_and_decided_with_authentication_everywhere(
    api: Any,
) -> None:
    await publish(api, "gated", "write")
    started = await api.executions.TriggerProcess(
        execution_service_pb2.TriggerProcessRequest(request_id=api.key(), process_name="gated"),
        metadata=bearer("operator-token"),
    )
    execution_id = started.execution.id
    assert started.execution.triggered_by == "operator@example.com"
    # execution → work (service:execution), executor → work (executor:local-0),
    # execution → approval (service:execution, the only allowed requester)
    approval = await api.pending_approval(execution_id)
    assert list(approval.approvers) == ["approver@example.com"]
    decided = await api.decide(approval.id, approval_pb2.DECISION_APPROVE, "approver-token")
    assert decided.decided_by == "approver@example.com"
    done = await api.wait(execution_id)
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED, done
    work = await api.work.ListWork(work_service_pb2.ListWorkRequest(execution_id=execution_id))
    assert {w.executor_id for w in work.work} == {LocalSuite.executor_id(0)}


async def running_work(api: Any, execution_id: str) -> work_pb2.WorkRequest:
    deadline = time.monotonic() + 30
    while True:
        found = await api.work.ListWork(work_service_pb2.ListWorkRequest(execution_id=execution_id))
        started = [w for w in found.work if w.status == work_pb2.WORK_STATUS_STARTED]
        if started:
            return started[0]
        assert time.monotonic() < deadline, f"no running work for {execution_id}"
        await asyncio.sleep(0.05)


async def expect_refused(call_: Any, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_
    assert refusal(caught.value) == (code, reason), caught.value.details()


async def test_work_reports_only_from_the_executor_holding_the_lease(api: Any) -> None:
    await publish(api, "slow-gated", "slow")
    started = await api.executions.TriggerProcess(
        execution_service_pb2.TriggerProcessRequest(
            request_id=api.key(), process_name="slow-gated"
        ),
        metadata=bearer("operator-token"),
    )
    execution_id = started.execution.id
    work = await running_work(api, execution_id)
    holder = LocalSuite.executor_id(0)
    assert work.executor_id == holder
    denied, required = grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_REQUIRED"
    forged = work_pb2.WorkResult(output="forged")
    for token, executor_id, code, reason in (
        # another executor's token naming the lease holder: the body is not the caller
        ("executor-token", holder, denied, "EXECUTOR_MISMATCH"),
        # another executor as itself: it does not hold the lease
        ("executor-token", "executor:rogue", grpc.StatusCode.FAILED_PRECONDITION, ""),
        # not an executor at all
        ("admin-token", holder, denied, required),
        ("service-token", holder, denied, required),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.work.RecordWorkCompleted(
                work_service_pb2.RecordWorkCompletedRequest(
                    request_id=api.key(), work_id=work.id, executor_id=executor_id, result=forged
                ),
                metadata=bearer(token),
            )
        assert caught.value.code() == code, (token, executor_id, caught.value.details())
        if reason:
            assert error_details(caught.value)[0] == reason
        await expect_refused(
            api.work.HeartbeatWork(
                work_service_pb2.HeartbeatWorkRequest(
                    work_id=work.id, executor_id=executor_id, release=True
                ),
                metadata=bearer(token),
            ),
            code,
            reason or error_details(caught.value)[0],
        )
    await expect_refused(
        api.work.RecordWorkFailed(
            work_service_pb2.RecordWorkFailedRequest(
                request_id=api.key(),
                work_id=work.id,
                executor_id=holder,
                error=types_pb2.Failure(code="AGENT_UNAVAILABLE", message="forged"),
            ),
            metadata=bearer("executor-token"),
        ),
        denied,
        "EXECUTOR_MISMATCH",
    )
    await expect_refused(
        api.work.RecordWorkStarted(
            work_service_pb2.RecordWorkStartedRequest(
                request_id=api.key(), work_id=work.id, executor_id=holder, delivery=1
            ),
            metadata=bearer("executor-token"),
        ),
        denied,
        "EXECUTOR_MISMATCH",
    )
    # Another execution's step correlation: only service identities may ask for work or
    # approvals, and approvals only the execution service.
    ref = work.correlation
    for token in ("admin-token", "operator-token", "approver-token"):
        await expect_refused(
            api.work.RequestWork(
                work_service_pb2.RequestWorkRequest(
                    request_id=api.key(), correlation=ref, payload=work.payload
                ),
                metadata=bearer(token),
            ),
            denied,
            required,
        )
        await expect_refused(
            api.approvals.RequestApproval(
                approval_service_pb2.RequestApprovalRequest(
                    request_id=api.key(),
                    execution_id=ref.execution_id,
                    step_id=ref.step_id,
                    title="approve me",
                    approvers=["approver@example.com"],
                ),
                metadata=bearer(token),
            ),
            denied,
            required,
        )
    await expect_refused(
        api.approvals.RequestApproval(
            approval_service_pb2.RequestApprovalRequest(
                request_id=api.key(),
                execution_id=ref.execution_id,
                step_id="review",
                title="approve me",
                approvers=["approver@example.com"],
            ),
            metadata=bearer("service-token"),
        ),
        denied,
        "NOT_A_REQUESTER",
    )
    still = await api.work.GetWork(work_service_pb2.GetWorkRequest(work_id=work.id))
    assert still.work.status == work_pb2.WORK_STATUS_STARTED
    assert still.work.executor_id == holder
    approvals = await api.approvals.ListApprovals(
        approval_service_pb2.ListApprovalsRequest(execution_id=execution_id)
    )
    assert list(approvals.approvals) == []

    # "Who did this" comes from the caller on pause, resume and cancel too.
    operator = bearer("operator-token")
    await api.executions.PauseExecution(
        execution_service_pb2.PauseExecutionRequest(
            request_id=api.key(), execution_id=execution_id
        ),
        metadata=operator,
    )
    await api.executions.ResumeExecution(
        execution_service_pb2.ResumeExecutionRequest(
            request_id=api.key(), execution_id=execution_id
        ),
        metadata=operator,
    )
    for claimed, reason in (
        ("admin@example.com", "PRINCIPAL_MISMATCH"),
        ("system:timeout", "SYSTEM_PRINCIPAL_RESERVED"),
    ):
        await expect_refused(
            api.executions.CancelExecution(
                execution_service_pb2.CancelExecutionRequest(
                    request_id=api.key(), execution_id=execution_id, cancelled_by=claimed
                ),
                metadata=operator,
            ),
            denied,
            reason,
        )
    cancelled = await api.executions.CancelExecution(
        execution_service_pb2.CancelExecutionRequest(
            request_id=api.key(), execution_id=execution_id, cancelled_by="OPERATOR@example.com"
        ),
        metadata=operator,
    )
    assert cancelled.execution.cancelled_by == "operator@example.com"
    facts = {}
    async for item in api.executions.WatchExecution(
        execution_service_pb2.WatchExecutionRequest(execution_id=execution_id)
    ):
        facts[item.type.rsplit(".", 1)[-1]] = item.fact
    paused, resumed = execution_facts.ProcessPaused(), execution_facts.ProcessResumed()
    facts["ProcessPaused"].Unpack(paused)
    facts["ProcessResumed"].Unpack(resumed)
    assert paused.paused_by == resumed.resumed_by == "operator@example.com"


async def test_nobody_claims_another_name_or_a_system_principal(api: Any) -> None:
    spec = spec_to_proto(parse_process(PROCESS.format(name="claims", message="x")))
    denied = grpc.StatusCode.PERMISSION_DENIED
    for claimed, reason in (
        ("viewer@example.com", "PRINCIPAL_MISMATCH"),
        ("system:schedule", "SYSTEM_PRINCIPAL_RESERVED"),
    ):
        await expect_refused(
            api.definitions.CreateDraft(
                definition_service_pb2.CreateDraftRequest(
                    request_id=api.key(), spec=spec, created_by=claimed
                ),
                metadata=bearer("author-token"),
            ),
            denied,
            reason,
        )
        await expect_refused(
            api.executions.TriggerProcess(
                execution_service_pb2.TriggerProcessRequest(
                    request_id=api.key(), process_name="gated", triggered_by=claimed
                ),
                metadata=bearer("operator-token"),
            ),
            denied,
            reason,
        )
    # naming yourself is fine
    draft = await api.definitions.CreateDraft(
        definition_service_pb2.CreateDraftRequest(
            request_id=api.key(), spec=spec, created_by="author@example.com"
        ),
        metadata=bearer("author-token"),
    )
    assert draft.definition.created_by == "author@example.com"


async def test_retry_is_recorded_as_the_caller(api: Any) -> None:
    spec = spec_to_proto(
        parse_process(
            "name: fails\nsteps:\n  - id: only\n"
            '    agent_task: {agent: worker, message: "broken"}\n'
        )
    )
    author = bearer("author-token")
    draft = await api.definitions.CreateDraft(
        definition_service_pb2.CreateDraftRequest(request_id=api.key(), spec=spec),
        metadata=author,
    )
    await api.definitions.PublishDefinition(
        definition_service_pb2.PublishDefinitionRequest(
            request_id=api.key(), definition_id=draft.definition.id
        ),
        metadata=author,
    )
    operator = bearer("operator-token")
    started = await api.executions.TriggerProcess(
        execution_service_pb2.TriggerProcessRequest(request_id=api.key(), process_name="fails"),
        metadata=operator,
    )
    execution_id = started.execution.id
    failed = await api.wait(execution_id)
    assert failed.status == execution_pb2.EXECUTION_STATUS_FAILED, failed
    await expect_refused(
        api.executions.RetryExecution(
            execution_service_pb2.RetryExecutionRequest(
                request_id=api.key(), execution_id=execution_id
            ),
            metadata=bearer("viewer-token"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_REQUIRED",
    )
    await api.executions.RetryExecution(
        execution_service_pb2.RetryExecutionRequest(
            request_id=api.key(), execution_id=execution_id
        ),
        metadata=operator,
    )
    resumed_by = []
    deadline = time.monotonic() + 30
    while not resumed_by:
        assert time.monotonic() < deadline, "no ProcessResumed after the retry"
        async for item in api.executions.WatchExecution(
            execution_service_pb2.WatchExecutionRequest(execution_id=execution_id)
        ):
            if item.type.endswith(".ProcessResumed"):
                fact = execution_facts.ProcessResumed()
                item.fact.Unpack(fact)
                resumed_by.append(fact.resumed_by)
        await asyncio.sleep(0.05)
    assert resumed_by == ["operator@example.com"]
